import { createHash, createHmac } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignatureV4 } from '@smithy/signature-v4';

/** Credentials as the AWS SDK resolves them (its provider is passed in). */
export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Options of {@link DirectGets}. */
export interface DirectGetsOptions {
  /** The S3 endpoint; objects are addressed path-style: `<endpoint>/<bucket>/<key>`. */
  readonly endpoint: string;
  readonly bucket: string;
  readonly region: () => Promise<string>;
  readonly credentials: () => Promise<Credentials>;
  /** Attempts per GET (throttling, 5xx and connection failures are retried with backoff). */
  readonly maxAttempts: number;
  /** Milliseconds one attempt may take. */
  readonly requestTimeoutMs: number;
}

/**
 * An HTTP failure, shaped like the AWS SDK's service errors (`name`, `$metadata`) so that one
 * mapping to `IvmrError` serves both paths.
 */
class HttpError extends Error {
  readonly $metadata: { httpStatusCode: number };
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = code;
    this.$metadata = { httpStatusCode: status };
  }
}

type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytesOf(data: SourceData): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

/** node:crypto as SigV4's hash (what the SDK's @smithy/hash-node does too). */
class NodeSha256 {
  readonly #hash;
  constructor(secret?: SourceData) {
    this.#hash =
      secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(secret));
  }
  update(data: SourceData): void {
    this.#hash.update(bytesOf(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.#hash.digest());
  }
}

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);

/**
 * Ranged GETs of one bucket over Node's own HTTP client, signed with SigV4, without the AWS SDK's
 * middleware stack: the read path of a running VM makes one per cold block, and the stack costs
 * about as much CPU as the rest of the read. Keep-alive connections; retries with full-jitter
 * exponential backoff (100 ms base, 20 s cap) on throttling, 5xx and connection failures, like
 * the SDK's standard mode.
 */
export class DirectGets {
  readonly #url: URL;
  readonly #base: string;
  readonly #bucket: string;
  readonly #signer: SignatureV4;
  readonly #agent: HttpAgent | HttpsAgent;
  readonly #options: DirectGetsOptions;

  constructor(options: DirectGetsOptions) {
    this.#options = options;
    this.#url = new URL(options.endpoint);
    this.#base = this.#url.pathname.replace(/\/+$/, '');
    this.#bucket = options.bucket;
    this.#signer = new SignatureV4({
      credentials: options.credentials,
      region: options.region,
      service: 's3',
      sha256: NodeSha256,
      // S3 signs the path as sent (encoded once), not encoded again.
      uriEscapePath: false,
      applyChecksum: false,
    });
    const secure = this.#url.protocol === 'https:';
    this.#agent = secure
      ? new HttpsAgent({ keepAlive: true, maxSockets: 50 })
      : new HttpAgent({ keepAlive: true, maxSockets: 50 });
  }

  /** The object's bytes, or those of `range`. `signal` aborts every attempt and the backoff. */
  async get(
    key: string,
    range: { offset: number; length: number } | undefined,
    signal: AbortSignal,
  ): Promise<Uint8Array> {
    const path = `${this.#base}/${this.#bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once(path, range, signal);
      } catch (err) {
        const status = (err as HttpError).$metadata?.httpStatusCode;
        const retry = status === undefined ? !signal.aborted : RETRY_STATUS.has(status);
        if (!retry || attempt >= this.#options.maxAttempts) throw err;
        const cap = Math.min(20_000, 100 * 2 ** attempt);
        await sleep(Math.random() * cap, undefined, { signal });
      }
    }
  }

  async #once(
    path: string,
    range: { offset: number; length: number } | undefined,
    signal: AbortSignal,
  ): Promise<Uint8Array> {
    const url = this.#url;
    const headers: Record<string, string> = {
      host: url.host,
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    };
    if (range) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    const signed = await this.#signer.sign({
      method: 'GET',
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path,
      query: {},
      headers,
    });
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Uint8Array>((resolve, reject) => {
      const req = request(
        {
          agent: this.#agent,
          protocol: url.protocol,
          hostname: url.hostname,
          port: url.port,
          path,
          method: 'GET',
          headers: signed.headers,
          signal,
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
              return;
            }
            const text = body.toString('utf8');
            const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? `HTTP${status}`;
            const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? code;
            reject(new HttpError(status, code, message));
          });
        },
      );
      req.setTimeout(this.#options.requestTimeoutMs, () =>
        req.destroy(new Error(`no answer within ${this.#options.requestTimeoutMs} ms`)),
      );
      req.on('error', reject);
      req.end();
    });
  }

  /** Closes the kept-alive connections. */
  destroy(): void {
    this.#agent.destroy();
  }
}
