import { isIP } from 'node:net';

/**
 * Universal addresses (RFC 1833 §2.1, RFC 5665 §5.2.3.3): the host as text followed by the port
 * as two decimal octets, high first. Port 2049 on 127.0.0.1 is `127.0.0.1.8.1`, on ::1 `::1.8.1`.
 */
export function formatUniversalAddress(host: string, port: number): string {
  return `${host}.${Math.floor(port / 256)}.${port % 256}`;
}

/** Host and port of a universal address, or undefined when it is not one. */
export function parseUniversalAddress(uaddr: string): { host: string; port: number } | undefined {
  const m = /^(.+)\.(\d{1,3})\.(\d{1,3})$/.exec(uaddr);
  if (!m) return undefined;
  const hi = Number(m[2]);
  const lo = Number(m[3]);
  if (hi > 255 || lo > 255 || isIP(m[1]!) === 0) return undefined;
  return { host: m[1]!, port: hi * 256 + lo };
}

/** An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it carries. */
export function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** True for 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
export function isLoopback(address: string): boolean {
  const a = unmapIPv4(address);
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'));
}
