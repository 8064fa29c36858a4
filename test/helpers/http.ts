// Raw HTTP requests for the API tests.

import { request as httpRequest } from 'node:http'

/** Where a raw request goes: the address to connect to, and the Host header it sends unless `headers` names another. */
export interface RawTarget { hostname: string, port: number, host: string }

/** One request with exactly these headers (fetch would not let a test set Host); resolves with the status and the whole body. */
export async function rawRequest (target: RawTarget, method: string, path: string, headers: Record<string, string> = {}, body?: string, timeoutMs = 10_000): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    // A connection of its own (no keep-alive agent): each request stands alone, as an attacker's would.
    const req = httpRequest({ host: target.hostname, port: target.port, method, path, headers: { host: target.host, ...headers }, timeout: timeoutMs, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: text }) })
    })
    // Node only reports the timeout; without this a request nobody answers would hang the test.
    req.on('timeout', () => { req.destroy(new Error(`no answer to ${method} ${path} within ${timeoutMs} ms`)) })
    req.on('error', reject)
    req.end(body)
  })
}
