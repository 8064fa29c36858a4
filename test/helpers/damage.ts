// Damage to a LevelDB directory, as a disk or a crash leaves it, for the tests of
// a node that must notice it.

import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** Flips 64 bytes in the middle of the largest table or log file of a LevelDB dir; returns the file. */
export async function damageMiddle (dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => /\.(ldb|log)$/.test(f))
  const sized = await Promise.all(files.map(async (f) => ({ f, size: (await stat(join(dir, f))).size })))
  const { f } = sized.sort((a, b) => b.size - a.size)[0]!
  const bytes = await readFile(join(dir, f))
  const at = Math.floor(bytes.length / 2)
  for (let k = at; k < Math.min(bytes.length, at + 64); k++) bytes[k] = bytes[k]! ^ 0xff
  await writeFile(join(dir, f), bytes)
  return f
}
