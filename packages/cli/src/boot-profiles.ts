import { homedir } from 'node:os';
import { join } from 'node:path';
import { BootProfiles } from '@ivmr/recovery';
import type { Command } from 'commander';

/**
 * Where `ivmr verify --boot` saves boot profiles and `ivmr serve` looks for them, unless
 * `--boot-profiles` says otherwise: `$IVMR_BOOT_PROFILES`, else
 * `${XDG_CACHE_HOME:-~/.cache}/ivmr/boot-profiles`.
 */
export function defaultBootProfilesDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.IVMR_BOOT_PROFILES) return env.IVMR_BOOT_PROFILES;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ivmr', 'boot-profiles');
}

/** Adds `--boot-profiles <dir>` and `--no-boot-profiles` to a command. */
export function addBootProfilesOptions(command: Command, what: string): Command {
  return command
    .option(
      '--boot-profiles <dir>',
      `${what} (default $IVMR_BOOT_PROFILES, else ~/.cache/ivmr/boot-profiles)`,
    )
    .option('--no-boot-profiles', 'neither record nor use boot profiles');
}

/** The store `--boot-profiles` names: undefined after `--no-boot-profiles`. */
export function bootProfilesOf(flag: string | boolean | undefined): BootProfiles | undefined {
  if (flag === false) return undefined;
  return new BootProfiles(typeof flag === 'string' ? flag : defaultBootProfilesDir());
}
