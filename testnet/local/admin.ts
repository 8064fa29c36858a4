// The admin endpoint of a testnet node (started with --fault-injection): its
// network fault rules, read and replaced.

import type { FaultRules, FaultsView } from '../../node/faults.ts'

/** A node that does not answer by then is taken as unable to take rules now. */
const ADMIN_TIMEOUT_MS = 5_000

export async function putRules (apiUrl: string, rules: FaultRules): Promise<FaultsView> {
  return await call(apiUrl, 'PUT', rules)
}

export async function getRules (apiUrl: string): Promise<FaultsView> {
  return await call(apiUrl, 'GET')
}

async function call (apiUrl: string, method: 'GET' | 'PUT', body?: FaultRules): Promise<FaultsView> {
  const response = await fetch(`${apiUrl}/v1/admin/faults`, {
    method,
    signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS),
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  })
  const answer = await response.json().catch(() => null) as (FaultsView & { error?: { message?: string } }) | null
  if (response.status === 404) throw new Error('it has no fault injection (it was not started by the testnet with --fault-injection)')
  if (!response.ok) throw new Error(answer?.error?.message ?? `HTTP ${response.status}`)
  if (answer === null) throw new Error('it answered with something that is not JSON')
  return answer
}
