/** Kinds of handles a test must not leave open: sockets, listeners, child processes. */
const WATCHED = new Set(['TCPServerWrap', 'TCPSocketWrap', 'PipeWrap', 'ProcessWrap']);

/** The watched handles open in this process now, sorted. */
export function openHandles(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((r) => WATCHED.has(r))
    .sort();
}

/**
 * Waits until the open handles are back to `baseline` and throws, listing the extra ones, when
 * they are not within `timeoutMs`. A closed socket's handle is released a few event-loop turns
 * after its `close` event, so an immediate comparison would report false leaks.
 */
export async function expectNoLeakedHandles(
  baseline: readonly string[],
  timeoutMs = 2000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = openHandles();
    const extra = [...now];
    for (const h of baseline) {
      const i = extra.indexOf(h);
      if (i >= 0) extra.splice(i, 1);
    }
    if (extra.length === 0) return;
    if (Date.now() > deadline) throw new Error(`leaked handles: ${extra.join(', ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
