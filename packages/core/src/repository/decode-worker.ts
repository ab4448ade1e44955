/**
 * The script each {@link DecodePool} worker runs: it checks and decodes the frames of one job at
 * a time, straight from the shared buffer the pack was read into to the shared buffer the read
 * goes to, and answers with the first corrupt frame, if any.
 */
import { parentPort } from 'node:worker_threads';
import { decodeFrameInto } from '../format/frame.js';
import type { DecodeJobMessage, DecodeReplyMessage } from './decode-pool.js';

const port = parentPort;
if (port === null) throw new Error('decode-worker.js runs as a worker thread of a DecodePool');

port.on('message', (job: DecodeJobMessage) => {
  const input = new Uint8Array(job.input);
  const output = new Uint8Array(job.output);
  const f = job.frames;
  let reply: DecodeReplyMessage = { id: job.id, index: -1 };
  for (let i = 0; i < f.length; i += 4) {
    const stored = input.subarray(f[i]!, f[i]! + f[i + 1]!);
    const fault = decodeFrameInto(stored, output.subarray(f[i + 2]!, f[i + 2]! + f[i + 3]!));
    if (fault !== undefined) {
      reply = { id: job.id, index: i / 4, why: fault.why };
      break;
    }
  }
  port.postMessage(reply);
});
