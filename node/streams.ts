// What a libp2p stream error means for the protocols of ours that read them.

/** The stream was closed, reset or aborted under us: reopen it, or give up quietly. */
export function isStreamGone (err: unknown): boolean {
  const name = (err as Error)?.name ?? ''
  return /StreamState|StreamClosed|StreamReset|StreamAborted|StreamStateError/.test(name)
}

/** The peer sent a frame over the length limit of the protocol: it misbehaves. */
export function isOversized (err: unknown): boolean {
  const name = (err as Error)?.name ?? ''
  return name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError' || name === 'InvalidMessageLengthError'
}
