// The one error of the testnet commands: one line for the user, and the exit
// code it deserves (1 the operation failed, 2 the input was wrong).

export class TestnetError extends Error {
  override name = 'TestnetError'
  readonly exitCode: 1 | 2
  constructor (message: string, exitCode: 1 | 2 = 1) {
    super(message)
    this.exitCode = exitCode
  }
}
