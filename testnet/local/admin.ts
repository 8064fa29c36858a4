// The admin endpoint of a testnet node (started with --fault-injection): its
// network fault rules, read and replaced. The endpoint is for admins: every call
// is signed with a user key (the testnet's admin.key, adminKeyFile in testnet.ts).

import type { UserKey } from '../../access/keys.ts'
import { signRequest } from '../../access/request.ts'
import type { FaultRules, FaultsView } from '../../node/faults.ts'

/** A node that does not answer by then is taken as unable to take rules now. */
const ADMIN_TIMEOUT_MS = 5_000

export async function putRules (apiUrl: string, rules: FaultRules, key: UserKey): Promise<FaultsView> {
  return await call(apiUrl, 'PUT', key, rules)
}

export async function getRules (apiUrl: string, key: UserKey): Promise<FaultsView> {
  return await call(apiUrl, 'GET', key)
}

async function call (apiUrl: string, method: 'GET' | 'PUT', key: UserKey, body?: FaultRules): Promise<FaultsView> {
  const url = new URL('/v1/admin/faults', apiUrl)
  const text = body === undefined ? undefined : JSON.stringify(body)
  const headers: Record<string, string> = signRequest(key, { method, host: url.host, path: url.pathname, body: text ?? '' }, Date.now())
  if (text !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(url, { method, headers, body: text, signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS) })
  const answer = await response.json().catch(() => null) as (FaultsView & { error?: { message?: string } }) | null
  if (response.status === 404) throw new Error('it has no fault injection (it was not started by the testnet with --fault-injection)')
  if (!response.ok) throw new Error(answer?.error?.message ?? `HTTP ${response.status}`)
  if (answer === null) throw new Error('it answered with something that is not JSON')
  return answer
}
