import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import {
  ErrorCode,
  IvmrError,
  isValidObjectName,
  type ObjectInfo,
  type ObjectKind,
  type StoreAdapter,
} from '@ivmr/core';
import { DirectGets } from './direct-get.js';

/** Options of {@link S3Store.open}. */
export interface S3StoreOptions {
  readonly bucket: string;
  /** Key prefix of the repository in the bucket (`repos/prod`); default none. */
  readonly prefix?: string;
  /**
   * The S3 endpoint (`http://127.0.0.1:7480` for a Ceph RGW); default the AWS SDK's own
   * resolution (`AWS_ENDPOINT_URL`, the profile, else AWS).
   */
  readonly endpoint?: string;
  /** Region; default the SDK's resolution (`AWS_REGION`, the profile), else `us-east-1`. */
  readonly region?: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most servers other than AWS want. Default:
   * true when `endpoint` is given. */
  readonly forcePathStyle?: boolean;
  /** Credentials; default the SDK's chain (environment, shared files and profiles, IMDS). */
  readonly credentials?: S3ClientConfig['credentials'];
  /** Attempts per request, with the SDK's backoff on throttling and 5xx; default 5. */
  readonly maxAttempts?: number;
  /** Milliseconds a request may take before it fails (and is retried); default 30000. */
  readonly requestTimeoutMs?: number;
  /**
   * Milliseconds a `get` (a blob read of a running VM) may take in all, retries and body
   * included, before it fails with `IVMR_IO`; default 60000. A store that stops answering then
   * costs a guest read this long at most, never a hung server.
   */
  readonly getTimeoutMs?: number;
  /** Objects of at least this many bytes are written by multipart upload; default 64 MiB. */
  readonly multipartThreshold?: number;
  /** Part size of a multipart upload (at least 5 MiB, as S3 requires); default 16 MiB. */
  readonly partSize?: number;
  /** Create the bucket when it does not exist (default false). */
  readonly createBucket?: boolean;
  /** A client of your own (its settings win; it is not destroyed by `close`). */
  readonly client?: S3Client;
  /**
   * Blob reads (`get`) over Node's own HTTP client, signed with SigV4, instead of through the
   * SDK's middleware stack, which costs about twice the CPU per GET (the read path of a running
   * VM makes one per cold block). Same retries, timeouts and errors. Default: true when
   * `endpoint` is given with path-style URLs (Ceph, MinIO and other on-premises servers) and no
   * `client`; AWS's own endpoints always go through the SDK's endpoint rules.
   */
  readonly directGets?: boolean;
}

const MiB = 1024 * 1024;

/**
 * A store adapter on S3-compatible object storage: every object is one S3 object under
 * `<prefix>/<kind>/<name>`, blob reads are ranged GETs, large objects are written by multipart
 * upload. Failures are `IvmrError`s: `IVMR_NOT_FOUND` for a missing object, `IVMR_IO` (with the
 * SDK's error as `cause`) for the rest, after the SDK's retries.
 */
export class S3Store implements StoreAdapter {
  readonly location: string;
  readonly #client: S3Client;
  readonly #ownsClient: boolean;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #getTimeoutMs: number;
  readonly #direct: DirectGets | undefined;

  private constructor(
    client: S3Client,
    owns: boolean,
    options: S3StoreOptions,
    direct: DirectGets | undefined,
  ) {
    this.#direct = direct;
    this.#client = client;
    this.#ownsClient = owns;
    this.#bucket = options.bucket;
    const prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.#prefix = prefix === '' ? '' : `${prefix}/`;
    this.location = `s3://${options.bucket}/${prefix}`;
    this.#multipartThreshold = options.multipartThreshold ?? 64 * MiB;
    this.#getTimeoutMs = options.getTimeoutMs ?? 60_000;
    this.#partSize = options.partSize ?? 16 * MiB;
    if (!Number.isSafeInteger(this.#partSize) || this.#partSize < 5 * MiB) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `partSize must be at least 5 MiB (S3's smallest part), got ${this.#partSize}`,
      );
    }
  }

  /**
   * Opens the store: checks that the bucket answers (creating it with `createBucket`).
   * `IVMR_NOT_FOUND` when the bucket does not exist, `IVMR_IO` when the server cannot be reached
   * or refuses the credentials.
   */
  static async open(options: S3StoreOptions): Promise<S3Store> {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket)) {
      throw new IvmrError(ErrorCode.INVALID_ARGUMENT, `invalid bucket name ${options.bucket}`);
    }
    const client =
      options.client ??
      new S3Client({
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
        forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
        maxAttempts: options.maxAttempts ?? 5,
        ...(options.credentials ? { credentials: options.credentials } : {}),
        requestHandler: { requestTimeout: options.requestTimeoutMs ?? 30_000 },
      });
    const pathStyle = options.forcePathStyle ?? options.endpoint !== undefined;
    const direct =
      options.directGets ?? (options.endpoint !== undefined && pathStyle && !options.client);
    if (direct && (options.endpoint === undefined || !pathStyle)) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        'directGets needs an endpoint with path-style URLs',
      );
    }
    const store = new S3Store(
      client,
      options.client === undefined,
      options,
      direct
        ? new DirectGets({
            endpoint: options.endpoint!,
            bucket: options.bucket,
            region: () => client.config.region(),
            credentials: () => client.config.credentials(),
            maxAttempts: options.maxAttempts ?? 5,
            requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
          })
        : undefined,
    );
    try {
      await store.#checkBucket(options.createBucket === true);
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  async get(
    kind: ObjectKind,
    name: string,
    range?: { offset: number; length: number },
  ): Promise<Uint8Array> {
    const key = this.#key(kind, name);
    if (range && range.length === 0) {
      // S3 has no empty range: ask whether the object exists.
      await this.#call(`head ${key}`, () =>
        this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key })),
      );
      return new Uint8Array(0);
    }
    const what = `get ${key}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#getTimeoutMs);
    try {
      return await this.#call(what, async () => {
        if (this.#direct) return this.#direct.get(key, range, abort.signal);
        const out = await this.#client.send(
          new GetObjectCommand({
            Bucket: this.#bucket,
            Key: key,
            ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
          }),
          { abortSignal: abort.signal },
        );
        return (await out.Body?.transformToByteArray()) ?? new Uint8Array(0);
      });
    } catch (err) {
      if (abort.signal.aborted) {
        throw new IvmrError(
          ErrorCode.IO,
          `${this.location}: ${what} timed out after ${this.#getTimeoutMs} ms`,
          { cause: err, details: { timeoutMs: this.#getTimeoutMs } },
        );
      }
      // A range that starts at or past the end is a short (empty) result, as the contract says.
      if (range && httpStatus((err as IvmrError).cause) === 416) return new Uint8Array(0);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async put(kind: ObjectKind, name: string, data: Uint8Array): Promise<void> {
    const key = this.#key(kind, name);
    // The SDK reads `data` only while the call runs (retries included): no copy is needed.
    if (data.length < this.#multipartThreshold) {
      await this.#call(`put ${key}`, () =>
        this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: key, Body: data })),
      );
      return;
    }
    await this.#multipart(key, data);
  }

  async has(kind: ObjectKind, name: string): Promise<boolean> {
    const key = this.#key(kind, name);
    try {
      await this.#call(`head ${key}`, () =>
        this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key })),
      );
      return true;
    } catch (err) {
      if ((err as IvmrError).code === ErrorCode.NOT_FOUND) return false;
      throw err;
    }
  }

  async *list(kind: ObjectKind): AsyncIterable<ObjectInfo> {
    const prefix = `${this.#prefix}${kind}/`;
    let token: string | undefined;
    do {
      const page = await this.#call(`list ${prefix}`, () =>
        this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        const name = o.Key?.slice(prefix.length) ?? '';
        if (isValidObjectName(name)) yield { name, size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(kind: ObjectKind, name: string): Promise<void> {
    const key = this.#key(kind, name);
    await this.#call(`delete ${key}`, () =>
      this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key })),
    );
  }

  async close(): Promise<void> {
    this.#direct?.destroy();
    if (this.#ownsClient) this.#client.destroy();
  }

  async #checkBucket(create: boolean): Promise<void> {
    try {
      await this.#call(`bucket ${this.#bucket}`, () =>
        this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket })),
      );
    } catch (err) {
      if ((err as IvmrError).code !== ErrorCode.NOT_FOUND || !create) throw err;
      await this.#call(`create bucket ${this.#bucket}`, () =>
        this.#client.send(new CreateBucketCommand({ Bucket: this.#bucket })),
      );
    }
  }

  /** Writes `body` in parts; a failed upload is aborted, so no part is left behind. */
  async #multipart(key: string, body: Uint8Array): Promise<void> {
    const created = await this.#call(`start upload ${key}`, () =>
      this.#client.send(new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: key })),
    );
    const uploadId = created.UploadId!;
    try {
      const parts: { ETag: string; PartNumber: number }[] = [];
      for (let at = 0, n = 1; at < body.length; at += this.#partSize, n++) {
        const part = body.subarray(at, Math.min(at + this.#partSize, body.length));
        const out = await this.#call(`upload part ${n} of ${key}`, () =>
          this.#client.send(
            new UploadPartCommand({
              Bucket: this.#bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber: n,
              Body: part,
            }),
          ),
        );
        parts.push({ ETag: out.ETag!, PartNumber: n });
      }
      await this.#call(`complete upload ${key}`, () =>
        this.#client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.#bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        ),
      );
    } catch (err) {
      await this.#client
        .send(
          new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: key, UploadId: uploadId }),
        )
        .catch(() => {});
      throw err;
    }
  }

  #key(kind: ObjectKind, name: string): string {
    if (!isValidObjectName(name)) {
      throw new IvmrError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid object name ${JSON.stringify(name)}`,
      );
    }
    return `${this.#prefix}${kind}/${name}`;
  }

  /** Runs one S3 request, turning its failure into an `IvmrError`. */
  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const status = httpStatus(err);
      const code = (err as { name?: string }).name;
      if (
        status === 404 ||
        code === 'NoSuchKey' ||
        code === 'NotFound' ||
        code === 'NoSuchBucket'
      ) {
        throw new IvmrError(ErrorCode.NOT_FOUND, `${this.location}: ${what}: not found`, {
          cause: err,
          details: { status },
        });
      }
      throw new IvmrError(
        ErrorCode.IO,
        `${this.location}: ${what} failed: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${(err as Error).message}`,
        { cause: err, details: { status } },
      );
    }
  }
}

/** The HTTP status of an SDK error, when it has one. */
function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
}
