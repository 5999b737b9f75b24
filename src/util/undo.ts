/**
 * A stack of undo steps. Each step of a multi-step operation pushes its undo right
 * after it succeeds (or right before, for steps that can half-succeed); on failure
 * the stack runs in reverse. A failing undo does not stop the others: every error
 * is collected so the caller can report it and keep what was not cleaned visible.
 * Each undo is told how many undos before it failed, so bookkeeping steps (forget
 * the record, free the name) can decline to run when resources are still out there.
 */
export interface UndoFailure {
  step: string;
  error: Error;
}

export type UndoFn = (failuresSoFar: number) => Promise<void>;

export class UndoStack {
  private readonly steps: { name: string; undo: UndoFn }[] = [];

  push(name: string, undo: UndoFn): void {
    this.steps.push({ name, undo });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Forget every step: the operation succeeded and its effects are kept. */
  commit(): void {
    this.steps.length = 0;
  }

  /** Runs every undo, newest first, each bounded by its own fresh timeout. */
  async unwind(timeoutMs = 60_000): Promise<UndoFailure[]> {
    const failures: UndoFailure[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await withTimeout(step.undo(failures.length), timeoutMs, `undo of ${step.name}`);
      } catch (e) {
        failures.push({ step: step.name, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    return failures;
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
