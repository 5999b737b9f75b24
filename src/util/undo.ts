/**
 * A stack of undo steps. Each step of a multi-step operation pushes its undo right
 * after it succeeds (or right before, for steps that can half-succeed); on failure
 * the stack runs in reverse. A failing undo does not stop the others: every error
 * is collected so the caller can report it and keep what was not cleaned visible.
 * Each undo is told how many undos before it failed, so bookkeeping steps (forget
 * the record, free the name) can decline to run when resources are still out there.
 */
import type { Logger } from './log.js';

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

/** The one failure policy of a multi-step creation (RunPodSandbox, CreateContainer). */
export interface RollbackPolicy {
  logger: Logger;
  /** What is being made, for the log lines ("RunPodSandbox", "CreateContainer"). */
  what: string;
  /**
   * Called only when some undo failed: keep the record visible (sandbox NOTREADY,
   * container exited CreateFailed) with its name reserved, so Stop/Remove or the restart
   * sweep finish the job. `message` is the failure and every undo that failed.
   */
  onIncomplete: (message: string) => Promise<void>;
}

/**
 * Runs body, whose steps push their undos on `undo`. On success the stack is committed;
 * on failure it is unwound newest first, an incomplete rollback is reported through
 * onIncomplete and logged once, and the body's own error is rethrown unchanged.
 */
export async function runWithRollback<T>(undo: UndoStack, body: () => Promise<T>, policy: RollbackPolicy): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    policy.logger.warn({ err: err.message, undo: undo.size }, `${policy.what} failed, rolling back`);
    const failures = await undo.unwind();
    if (failures.length > 0) {
      policy.logger.error({ failures: failures.map((f) => ({ step: f.step, err: f.error.message })) }, `${policy.what}: rollback incomplete`);
      await policy.onIncomplete(`${err.message}; rollback incomplete: ${failures.map((f) => `${f.step}: ${f.error.message}`).join('; ')}`);
    }
    throw e;
  }
  undo.commit();
  return result;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
