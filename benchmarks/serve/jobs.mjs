/**
 * The jobs of the serve benchmark, the temperatures they run at, and the targets of the issue
 * ("benchmarks/: fio-driven benchmarks of the hot read path, side by side with nfs-ganesha").
 */

const KiB = 1024;

/**
 * @typedef {import('../nfs/fio.mjs').Job & { temps: ('cold' | 'warm')[] }} ServeJob
 */

/**
 * Reads run cold and warm; the jobs that write run warm only (a write does not read the backup).
 * @type {ServeJob[]}
 */
export const SERVE_JOBS = [
  {
    id: 'randread-4k-qd1',
    title: '4 KiB random read, QD1',
    rw: 'randread',
    bs: 4 * KiB,
    iodepth: 1,
    file: 'read',
    target: null,
    temps: ['cold', 'warm'],
  },
  {
    id: 'randread-4k-qd16',
    title: '4 KiB random read, QD16',
    rw: 'randread',
    bs: 4 * KiB,
    iodepth: 16,
    file: 'read',
    target: 1.5,
    temps: ['cold', 'warm'],
  },
  {
    id: 'read-512k-qd4',
    title: '512 KiB sequential read, QD4',
    rw: 'read',
    bs: 512 * KiB,
    iodepth: 4,
    file: 'read',
    target: 1.0,
    temps: ['cold', 'warm'],
  },
  {
    id: 'randwrite-4k-qd16',
    title: '4 KiB random write, QD16',
    rw: 'randwrite',
    bs: 4 * KiB,
    iodepth: 16,
    file: 'write',
    target: 1.0,
    temps: ['warm'],
  },
  {
    id: 'randrw-4k-qd16',
    title: '4 KiB random 70% read / 30% write, QD16',
    rw: 'randrw',
    readShare: 70,
    bs: 4 * KiB,
    iodepth: 16,
    file: 'write',
    target: null,
    temps: ['warm'],
  },
];

/**
 * @typedef {object} Target
 * @property {string} id
 * @property {string} title
 * @property {string} job
 * @property {'cold' | 'warm'} temp
 * @property {'ratio' | 'ratioToWarm' | 'p99Us'} kind ivmr ÷ ganesha at the same temperature,
 *   ivmr ÷ ganesha warm, or ivmr's p99 latency in µs
 * @property {'at-least' | 'at-most'} sense
 * @property {number} value
 * @property {string[]} stores the ivmr stores it applies to
 */

/** @type {Target[]} */
export const TARGETS = [
  {
    id: 'warm-randread-4k-qd16',
    title: 'warm 4 KiB random read QD16, ÷ ganesha warm',
    job: 'randread-4k-qd16',
    temp: 'warm',
    kind: 'ratio',
    sense: 'at-least',
    value: 1.5,
    stores: ['lz4', 'zstd'],
  },
  {
    id: 'warm-read-512k-qd4',
    title: 'warm 512 KiB sequential read QD4, ÷ ganesha warm',
    job: 'read-512k-qd4',
    temp: 'warm',
    kind: 'ratio',
    sense: 'at-least',
    value: 1.0,
    stores: ['lz4', 'zstd'],
  },
  {
    id: 'cold-read-512k-qd4',
    title: 'cold 512 KiB sequential read QD4 (lz4 store), ÷ ganesha warm',
    job: 'read-512k-qd4',
    temp: 'cold',
    kind: 'ratioToWarm',
    sense: 'at-least',
    value: 0.8,
    stores: ['lz4'],
  },
  {
    id: 'cold-randread-4k-qd16-p99',
    title: 'cold 4 KiB random read QD16, p99 latency',
    job: 'randread-4k-qd16',
    temp: 'cold',
    kind: 'p99Us',
    sense: 'at-most',
    value: 2000,
    stores: ['lz4', 'zstd'],
  },
  {
    id: 'warm-randwrite-4k-qd16',
    title: '4 KiB random write QD16, ÷ ganesha',
    job: 'randwrite-4k-qd16',
    temp: 'warm',
    kind: 'ratio',
    sense: 'at-least',
    value: 1.0,
    stores: ['lz4', 'zstd'],
  },
];
