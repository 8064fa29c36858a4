// Builders of valid records for the crdt tests, and a way to write as any writer.

import type * as Y from 'yjs'
import type { JobRecord, NodeRecord, ClaimRecord } from '../../crdt/schema.ts'
import { type RecordKeys, clientIdOf, derivedKeys, newNonce, writeSigned } from '../../crdt/signing.ts'

export function nodeRecord (id: string, over: Partial<NodeRecord> = {}): NodeRecord {
  return { id, addrs: [`/ip4/127.0.0.1/tcp/${4000 + id.length}`], apiUrl: 'http://127.0.0.1:1', cpuMillis: 2000, memoryBytes: 2 ** 30, labels: {}, startedAt: 1, updatedAt: 1, ...over }
}

export function jobRecord (id: string, by: string, over: Partial<JobRecord> = {}): JobRecord {
  return { id, name: `job-${id}`, type: 'batch', spec: { command: ['true'] }, desired: 'running', version: 1, submittedBy: by, submittedAt: 1, updatedAt: 1, ...over }
}

export function taskRecord (id: string, node: string, over: Partial<ClaimRecord> = {}): ClaimRecord {
  return { id, job: 'j1', node, generation: 1, state: 'running', since: 1, restarts: 0, ...over }
}

/**
 * Writes into any document as `writer` would, with the plain Yjs API underneath:
 * signed, under the writer's own client id. For tests of what a member may write
 * into its own records (junk included) and how readers take it.
 */
export function signedAs (doc: Y.Doc, writer: string, keys: RecordKeys = derivedKeys(writer)): (map: Y.Map<unknown>, at: { kind: string, space: string }, key: string, record: unknown) => void {
  const nonce = newNonce(Math.random)
  return (map, at, key, record) => {
    doc.clientID = clientIdOf(writer, nonce)
    writeSigned(map, at, key, record, { keys, nonce })
  }
}
