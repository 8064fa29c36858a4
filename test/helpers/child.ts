// Reading a spawned test child's output.

import type { ChildProcess } from 'node:child_process'

/** The child's first line on stdout; fails if it exits first or says nothing within 30 s. */
export async function firstLine (child: ChildProcess): Promise<string> {
  let text = ''
  return await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no line from the child within 30 s; got '${text}'`)) }, 30_000)
    child.stdout!.on('data', (data: Buffer) => {
      text += data.toString('utf8')
      const newline = text.indexOf('\n')
      if (newline >= 0) {
        clearTimeout(timer)
        resolve(text.slice(0, newline))
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`the child exited (${code ?? signal}) before saying anything; got '${text}'`))
    })
  })
}
