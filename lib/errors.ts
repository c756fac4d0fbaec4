/** An operating-system call failed. `code` is the errno name (`'EAGAIN'`), as in Node's own errors. */
export class OSError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(code: string, errno: number, syscall: string, message: string) {
    super(message);
    this.name = 'OSError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

export type ProcessErrorCode =
  | 'ERR_PROCESS_STARTED'
  | 'ERR_PROCESS_NOT_STARTED'
  | 'ERR_PROCESS_ALIVE'
  | 'ERR_PROCESS_CLOSED'
  | 'ERR_NOT_A_CHILD'
  | 'ERR_DAEMON_CHILDREN';

/** A `Process` was used in a way its state does not allow (start twice, join before start, ...). */
export class ProcessError extends Error {
  readonly code: ProcessErrorCode;
  constructor(code: ProcessErrorCode, message: string) {
    super(message);
    this.name = 'ProcessError';
    this.code = code;
  }
}

/** This process cannot `fork()` safely; the message says how to run it instead. */
export class ForkSafetyError extends Error {
  readonly code = 'ERR_FORK_UNSAFE';
  constructor(message: string) {
    super(message);
    this.name = 'ForkSafetyError';
  }
}
