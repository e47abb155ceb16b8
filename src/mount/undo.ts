/**
 * A stack of clean-up actions: every setup step pushes how to undo itself, and `run()` undoes
 * them newest first. A failing action is reported and does not stop the others.
 */
export interface UndoAction {
  /** What is undone (for error messages). */
  what: string;
  run(): Promise<void> | void;
}

export class UndoStack {
  private readonly actions: UndoAction[] = [];

  push(what: string, run: () => Promise<void> | void): void {
    this.actions.push({ what, run });
  }

  get size(): number {
    return this.actions.length;
  }

  /** Move every action onto `other` (same order, above what `other` holds). */
  moveTo(other: UndoStack): void {
    for (const a of this.actions.splice(0)) other.push(a.what, a.run);
  }

  /** Run every action newest first; returns the failures (`what: message`). */
  async run(onError: (msg: string) => void): Promise<string[]> {
    const failures: string[] = [];
    for (let a = this.actions.pop(); a; a = this.actions.pop()) {
      try {
        await a.run();
      } catch (e) {
        const msg = `${a.what}: ${(e as Error).message}`;
        failures.push(msg);
        onError(msg);
      }
    }
    return failures;
  }
}
