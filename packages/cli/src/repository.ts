import {
  ErrorCode,
  IvmrError,
  type LocalRepositoryOptions,
  openLocalRepository,
  Repository,
} from '@ivmr/core';

/** What `--repo` and `--s3-endpoint` name. */
export interface RepoFlags {
  /** A folder, or `s3://bucket[/prefix]`. */
  readonly repo: string;
  /** The S3 endpoint of an `s3://` repository (default `$AWS_ENDPOINT_URL`, else AWS). */
  readonly s3Endpoint?: string;
  /** Seconds to wait for other processes' conflicting locks (`--lock-wait`). */
  readonly lockWait?: number;
  /** Seconds a read from an s3:// repository may take in all, retries included (`--s3-timeout`). */
  readonly s3Timeout?: number;
}

/** Help of `--repo`, the same in every command. */
export const REPO_HELP =
  'repository: a folder, or s3://bucket[/prefix] on S3-compatible storage (see --s3-endpoint)';
/** Help of `--s3-endpoint`. */
export const S3_ENDPOINT_HELP =
  'endpoint of an s3:// repository, e.g. http://127.0.0.1:7480 for a Ceph RGW (default $AWS_ENDPOINT_URL, else AWS); credentials and region come from the AWS environment and profiles';

/** Help of `--s3-timeout`. */
export const S3_TIMEOUT_HELP =
  'seconds a read from an s3:// repository may take, retries included, before the guest read fails with an I/O error (default 60)';

/** Help of `--lock-wait`. */
export const LOCK_WAIT_HELP =
  'seconds to wait while other processes hold conflicting repository locks (a running backup or prune) before failing with IVMR_LOCKED';

/** `s3://bucket[/prefix]` split, or undefined for a folder. */
export function parseS3Url(location: string): { bucket: string; prefix: string } | undefined {
  if (!location.startsWith('s3://')) return undefined;
  const rest = location.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
  if (bucket === '') {
    throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `${location}: expected s3://bucket[/prefix]`);
  }
  return { bucket, prefix };
}

/**
 * Opens the repository `--repo` names: a local folder, or a bucket (and prefix) of S3-compatible
 * storage through `@ivmr/store-s3`, loaded only then. With `create`, a missing repository (and
 * bucket) is made.
 */
export async function openRepository(
  flags: RepoFlags,
  options: LocalRepositoryOptions = {},
): Promise<Repository> {
  if (flags.lockWait !== undefined) options = { ...options, lockWait: flags.lockWait * 1000 };
  const s3 = parseS3Url(flags.repo);
  if (!s3) return openLocalRepository(flags.repo, options);
  // The AWS SDK warns on every run that its releases from 2027 on will want Node 22: noise on a
  // command's stderr (the lockfile pins a release that runs on Node 20).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { S3Store } = await import('@ivmr/store-s3');
  const endpoint = flags.s3Endpoint ?? process.env.AWS_ENDPOINT_URL;
  const store = await S3Store.open({
    bucket: s3.bucket,
    prefix: s3.prefix,
    ...(endpoint ? { endpoint } : {}),
    ...(flags.s3Timeout !== undefined ? { getTimeoutMs: flags.s3Timeout * 1000 } : {}),
    createBucket: options.create === true,
  });
  try {
    if (options.create && !(await store.has('config', 'config'))) {
      return await Repository.init(store, options);
    }
    return await Repository.open(store, options);
  } catch (err) {
    await store.close();
    throw err;
  }
}

/** Opens the repository `--repo` names, runs `fn` and closes the repository whatever happens. */
export async function withRepository<T>(
  flags: RepoFlags,
  options: LocalRepositoryOptions,
  fn: (repo: Repository) => Promise<T>,
): Promise<T> {
  const repo = await openRepository(flags, options);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}
