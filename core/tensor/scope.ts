/**
 * Memory scopes: every tensor made inside {@link tidy} is released at its end unless it is returned
 * (or kept), so a loop's intermediates never wait for the garbage collector.
 */
import type { Tensor } from "./tensor.ts";

class Scope {
  readonly tensors: Tensor[] = [];
  track(t: Tensor): void {
    this.tensors.push(t);
  }
}

const stack: Scope[] = [];

export function currentScope(): Scope | undefined {
  return stack[stack.length - 1];
}

/** Collects the tensors in a (nested) result value. */
function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (v === null || typeof v !== "object" || depth > 4) return;
  if ((v as Tensor).shape !== undefined && typeof (v as Tensor).dispose === "function") {
    out.add(v as Tensor);
    return;
  }
  const vals = Array.isArray(v) ? v : Object.values(v as Record<string, unknown>);
  for (const x of vals) collect(x, out, depth + 1);
}

function close(scope: Scope, result: unknown): void {
  const keep = new Set<Tensor>();
  collect(result, keep);
  const parent = currentScope();
  for (const t of scope.tensors) {
    if (keep.has(t)) parent?.track(t);
    else t.dispose();
  }
}

/** Runs `fn`; tensors it creates are released at the end unless they are part of the result. */
export function tidy<T>(fn: () => T): T {
  const scope = new Scope();
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    close(scope, undefined);
    throw e;
  }
  stack.pop();
  close(scope, result);
  return result;
}

/**
 * Async version of {@link tidy}. Only one async scope may be open at a time per chain of awaits:
 * do not interleave two concurrent tidyAsync calls.
 */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Scope();
  stack.push(scope);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    stack.splice(stack.indexOf(scope), 1);
    close(scope, undefined);
    throw e;
  }
  stack.splice(stack.indexOf(scope), 1);
  close(scope, result);
  return result;
}

/** Removes tensors from the enclosing scopes so they outlive them (e.g. parameters, state). */
export function keep<T extends Tensor>(t: T): T {
  for (const s of stack) {
    const i = s.tensors.indexOf(t);
    if (i >= 0) s.tensors.splice(i, 1);
  }
  return t;
}
