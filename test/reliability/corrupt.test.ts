// Reliability: a node crashes and its state database is corrupt. Unreadable as a
// whole, the start is refused with one line that names the dir and the fix; the
// cluster carries on without the node; `--reset-state` brings it back, filled
// from its peers, and what its previous life left running is adopted or stopped.
// Damaged in the middle of a file, the node must refuse too, or start, say what it
// lost (in its log and in `murmur state --json`) and be filled from its peers: never
// run on a state that stays wrong, nor lose records without a word.

import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import type { StoreDamage } from '../../node/state-store.ts'
import { clusterFilesBeside } from '../../cli/cluster-files.ts'
import * as testnet from '../../testnet/local/testnet.ts'
import { murmur, userLines } from '../helpers/cli.ts'
import { resultRow, SCENARIO_MS, useCluster } from './harness.ts'
import { damageMiddle } from '../helpers/damage.ts'

const t = useCluster('corrupt', 5)

/** Starts a node on `dataDir` outside the testnet, as an operator would; it must refuse. */
async function startRefused (dataDir: string): Promise<{ code: number | null, lines: string[], stderr: string }> {
  const result = await murmur(['node', 'start', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--profile', 'local', '--log-level', 'error', '--cluster-key', t.cluster.clusterKeyFile, '--root-key', clusterFilesBeside(t.cluster.clusterKeyFile).rootPub], { timeoutMs: 30_000 })
  return { code: result.code, lines: userLines(result.stderr), stderr: result.stderr }
}


describe('reliability', () => {
  it('a corrupt state database on one node', async ({ task }) => {
    const row = resultRow(task, 'corrupt data dir on one node')
    const { cluster } = t
    const { net } = cluster
    await cluster.submit(0, { name: 'svc', type: 'service', count: 10 })
    await cluster.submit(1, { name: 'once', type: 'batch', count: 3 })
    expect((await cluster.waitClean(cluster.all(), Date.now(), 60_000)).census.problems).toEqual([])

    // Wholly unreadable: refused with one line; the others carry on.
    const victim = 3
    const node = net.nodes[victim]!
    const stateDir = join(node.dataDir, 'state')
    const away = cluster.faults.open('SIGKILL, corrupt state database', [victim])
    await testnet.kill(cluster.dir, victim)
    const killedAt = Date.now()
    for (const file of await readdir(stateDir)) if (/^(CURRENT|MANIFEST-.*|.*\.(ldb|log))$/.test(file)) await writeFile(join(stateDir, file), 'garbage')
    const refused = await startRefused(node.dataDir)
    expect(refused.code, refused.stderr).toBe(2)
    expect(refused.lines, refused.stderr).toHaveLength(1)
    expect(refused.lines[0]).toContain(stateDir)
    expect(refused.lines[0]).toMatch(/--reset-state/)
    await cluster.finish(row, killedAt, { live: cluster.except(victim), recover: false, note: 'refused in one line; the others, from the crash' })
    // A job the node never saw, acknowledged while it was away.
    await cluster.submit(2, { name: 'while-away', type: 'service', count: 2 })

    const resetAt = Date.now()
    await cluster.restart(victim, ['--reset-state'])
    away()
    const reset = await cluster.finish(row, resetAt)
    expect(reset.orphans).toBe(0)
    expect((await readdir(node.dataDir)).filter((f) => f.startsWith('state.reset-'))).toHaveLength(1)

    // Damaged in the middle: refused, or started and refilled by its peers.
    const second = 1
    const damaged = cluster.faults.open('SIGKILL, damaged state database', [second])
    await testnet.kill(cluster.dir, second)
    const secondState = join(net.nodes[second]!.dataDir, 'state')
    const file = await damageMiddle(secondState)
    const logFile = net.nodes[second]!.logFile
    const logBefore = (await readFile(logFile, 'utf8')).length
    /** The node's warnings and errors about its state since the restart. */
    const warnings = async (): Promise<string[]> => (await readFile(logFile, 'utf8')).slice(logBefore).split('\n').filter((l) => /"level":(40|50|60)/.test(l) && /state/.test(l)).map((l) => (JSON.parse(l) as { msg: string }).msg)
    const restartedAt = Date.now()
    let started = true
    try {
      await cluster.restart(second)
    } catch (err) {
      // Refused: with the one line that says what to do.
      started = false
      expect((err as Error).message).toMatch(/--reset-state/)
      row.notes.push(`${file} damaged in the middle: refused`)
      await cluster.restart(second, ['--reset-state'])
    }
    // What LevelDB said about it: it drops a damaged log record and goes on.
    const dropped = /dropping (\d+) bytes; Corruption/.exec(await readFile(join(secondState, 'LOG'), 'utf8').catch(() => ''))
    if (started) {
      // It started: it must say what it lost, in its log and to an operator's
      // `murmur state --json`, then end up equal to its peers (finish checks that).
      const shown = await murmur(['state', '--json', '--api', net.nodes[second]!.apiUrl])
      expect(shown.code, shown.stderr).toBe(0)
      const damage = (JSON.parse(shown.stdout) as { store: { damage?: StoreDamage | null } }).store.damage ?? null
      expect(damage, `murmur state --json shows no damage after ${file} was damaged in the middle (LevelDB ${dropped === null ? 'reported nothing' : `dropped ${dropped[1]} bytes`})`).not.toBeNull()
      await vi.waitFor(async () => { expect(await warnings()).toContainEqual(expect.stringMatching(/^state database damaged: /)) }, { timeout: 10_000, interval: 250 })
      const lost = [
        damage!.droppedBytes > 0 ? `${damage!.droppedBytes} bytes dropped by LevelDB` : '',
        damage!.missingUpdates > 0 ? `${damage!.missingUpdates} updates missing` : '',
        damage!.corruptUpdates > 0 ? `${damage!.corruptUpdates} updates failing their checksum` : '',
        damage!.corruptSnapshot ? 'the snapshot failing its checksum' : '',
      ].filter((part) => part !== '')
      row.notes.push(`${file} damaged in the middle: started, refilled from the peers; murmur state shows ${lost.join(', ')}`)
    }
    const said = await warnings()
    row.notes.push(`LevelDB ${dropped === null ? 'reported nothing' : `dropped ${dropped[1]} bytes`}; the node warned: ${said.length === 0 ? 'nothing' : said.map((m) => `"${m.length > 120 ? `${m.slice(0, 117)}...` : m}"`).join(', ')}`)
    damaged()
    await cluster.finish(row, restartedAt, { recover: false, note: 'damaged node back' })
  }, SCENARIO_MS)
})
