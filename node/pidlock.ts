// A lock file holding the owner's PID: taken with O_EXCL, and taken over only
// from a process that no longer exists (a crash leaves its lock behind).

import { open, readFile, rm } from 'node:fs/promises'

export type LockResult = { release: () => Promise<void> } | { heldBy: number }

export async function tryLock (path: string): Promise<LockResult> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(String(process.pid))
      await handle.close()
      return { release: async () => { await rm(path, { force: true }) } }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = Number((await readFile(path, 'utf8').catch(() => '')).trim())
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isRunning(holder)) return { heldBy: holder }
      // Stale: its owner is gone. Another process may be taking it over too; O_EXCL decides.
      await rm(path, { force: true })
    }
  }
  throw new Error(`could not take the lock ${path}`)
}

export function isRunning (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
