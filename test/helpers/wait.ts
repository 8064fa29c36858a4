// Waiting for a condition in end-to-end tests: poll until it holds, and fail with
// what was last seen. The bound is a liveness limit, far above any expected time,
// never a performance assertion.

export async function waitUntil<T> (what: string, probe: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      last = await probe()
      if (done(last)) return last
    } catch (err) {
      lastError = err
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${JSON.stringify(last) ?? String(lastError)}`)
}
