// Builders of valid records for the crdt tests.

import type { JobRecord, NodeRecord, ClaimRecord } from '../../crdt/schema.ts'

export function nodeRecord (id: string, over: Partial<NodeRecord> = {}): NodeRecord {
  return { id, addrs: [`/ip4/127.0.0.1/tcp/${4000 + id.length}`], apiUrl: 'http://127.0.0.1:1', cpuMillis: 2000, memoryBytes: 2 ** 30, labels: {}, startedAt: 1, updatedAt: 1, ...over }
}

export function jobRecord (id: string, by: string, over: Partial<JobRecord> = {}): JobRecord {
  return { id, name: `job-${id}`, type: 'batch', spec: { command: ['true'] }, desired: 'running', version: 1, submittedBy: by, submittedAt: 1, updatedAt: 1, ...over }
}

export function taskRecord (id: string, node: string, over: Partial<ClaimRecord> = {}): ClaimRecord {
  return { id, job: 'j1', node, generation: 1, state: 'running', since: 1, restarts: 0, ...over }
}
