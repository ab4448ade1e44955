import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The README's demo, run as a user would (the workspace is built by scripts/test.sh first), so
// that it cannot rot: without a portmapper and on a free port, so it needs no port of its own.

const DEMO = fileURLToPath(new URL('../examples/demo/demo.mjs', import.meta.url));

function runDemo(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('the demo (examples/demo)', () => {
  it('backs up, restores and serves its sample VM, and checks the disk through NFS', async () => {
    const { code, out } = await runDemo(['--portmap', 'off', '--nfs-port', '0', '--no-wait']);
    expect(code, out).toBe(0);
    expect(out).toMatch(/restored disks identical to the originals \(qemu-img compare\): 2 of 2/);
    expect(out).toMatch(/^\$ nfs-cat .*vm-disk-flat\.vmdk/m);
    expect(out).toMatch(/^ {2}identical$/m);
    expect(out).toMatch(/esxcli storage nfs add/);
    expect(out).toMatch(/demo OK: every check passed/);
    expect(out).toMatch(/removed \/.*ivmr-demo-/);
  }, 180_000);
});
