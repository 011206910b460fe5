/**
 * Reverse-mode autograd. Ops call {@link record} when grad mode is on and an input requires grad;
 * {@link backward} walks the recorded graph once, releasing each op's saved activations as soon as its
 * backward has run, and accumulates leaf gradients into `.grad`.
 */
import { GpuError } from "../gpu/errors.ts";
import { type GradNode, sameShape, Tensor } from "./tensor.ts";
import { keep, tidy } from "./scope.ts";

let gradEnabled = true;

/** Whether ops record onto the tape now. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` with recording off (inference, EMA updates, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Async variant of {@link noGrad}. */
export async function noGradAsync<T>(fn: () => Promise<T>): Promise<T> {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return await fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Sets grad mode for a scope of code and returns the previous mode. */
export function setGradEnabled(on: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = on;
  return prev;
}

/**
 * Called during {@link backward} with each leaf (a parameter) whose gradient that backward will
 * not change any more: every recorded use of the leaf has had its backward run (or needed none).
 * The gradient exchange starts reading a group of gradients back as soon as all are final.
 */
export type GradFinalHook = (leaf: Tensor) => void;

let gradFinalHook: GradFinalHook | null = null;

/** Runs `fn` (which calls backward) with `hook` told of each leaf whose gradient is final. */
export function withGradFinalHook<T>(hook: GradFinalHook, fn: () => T): T {
  const prev = gradFinalHook;
  gradFinalHook = hook;
  try {
    return fn();
  } finally {
    gradFinalHook = prev;
  }
}

/** Whether an op with these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad);
}

/**
 * Keeps a tensor for backward: an alias that survives the caller disposing the original and is
 * released by the node after its backward ran.
 */
export function save(t: Tensor): Tensor {
  return keep(t.alias());
}

/**
 * Attaches a node to `out` if any input requires grad. `backward` gets the output gradient and returns
 * one gradient per input (null where none is needed); `saved` tensors are released after it runs.
 * `force` records even when no input requires grad (a block whose parameters do).
 */
export function record(
  op: string,
  out: Tensor,
  inputs: (Tensor | null | undefined)[],
  backward: (g: Tensor) => (Tensor | null)[],
  saved: Tensor[] = [],
  force = false,
): Tensor {
  if (!(force ? gradEnabled : needsGrad(...inputs))) {
    for (const s of saved) s.dispose();
    return out;
  }
  const ins = inputs.map((t) => (t?.requiresGrad ? t : null));
  const node: GradNode = {
    op,
    inputs: ins,
    backward,
    release() {
      for (const s of saved) s.dispose();
      saved.length = 0;
    },
  };
  out.node = node;
  out.requiresGrad = true;
  return out;
}

/** Topological order (inputs before outputs) of the graph below `roots`. */
function topoOrder(roots: Tensor[]): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: UNet graphs are deep enough to overflow a recursive walk.
  const stack: [Tensor, number][] = roots.filter((r) => r.node).map((r) => [r, 0]);
  for (const r of roots) seen.add(r);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const ins = t.node?.inputs ?? [];
    if (i < ins.length) {
      top[1]++;
      const c = ins[i];
      if (c && c.node && !seen.has(c)) {
        seen.add(c);
        stack.push([c, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/** Adds `b` into `a` in place, recording nothing: how backward sums two gradients of one tensor. */
export type GradAccumulator = (a: Tensor, b: Tensor) => void;

let gradAccumulator: GradAccumulator | null = null;

/**
 * Registers the in-place add that {@link backward} sums gradients with. The tensor layer cannot
 * import kernels, so the kernel layer registers it once (core/kernels/binary.ts, on load).
 */
export function setGradAccumulator(fn: GradAccumulator): void {
  gradAccumulator = fn;
}

function registeredAccumulator(a: Tensor, b: Tensor): void {
  if (!gradAccumulator) {
    throw new GpuError("backward: no gradient accumulator registered (import core/ops.ts)");
  }
  gradAccumulator(a, b);
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (!sameShape(leaf.shape, g.shape)) {
    throw new GpuError(`backward: gradient [${g.shape}] does not match leaf [${leaf.shape}]`);
  }
  if (leaf.grad) {
    registeredAccumulator(leaf.grad, g);
    g.dispose();
  } else {
    leaf.grad = keep(g);
  }
}

/**
 * Backpropagates from `roots` (scalars get gradient 1 unless `grads` are given). Leaf tensors that
 * require grad accumulate into `.grad`; the graph is released as it is consumed. Gradients are summed
 * with the registered accumulator ({@link setGradAccumulator}).
 */
export function backward(roots: Tensor[], grads: Tensor[]): void {
  for (const _ of walkBackward(roots, grads, gradFinalHook));
}

/**
 * {@link backward} that can pause between nodes: after each node's backward is recorded,
 * `pause()` is asked, and when it returns a promise the walk waits for it. The gradient exchange
 * pauses where a bucket is complete, to submit that much of backward to the GPU and let the event
 * loop start the exchange of earlier buckets while the GPU runs the rest.
 */
export async function backwardAsync(
  roots: Tensor[],
  grads: Tensor[],
  opts: { onFinal?: GradFinalHook; pause?: () => Promise<void> | undefined } = {},
): Promise<void> {
  const hook = opts.onFinal ?? null;
  const walk = walkBackward(roots, grads, hook);
  // The hook is also installed while each node runs: a checkpointed block's backward runs a
  // nested backward of its own, which reports the block's parameters through it.
  const next = () => hook ? withGradFinalHook(hook, () => walk.next()) : walk.next();
  while (!next().done) {
    const wait = opts.pause?.();
    if (wait) await wait;
  }
}

/** The backward walk; yields after each node (the one loop behind both entry points). */
function* walkBackward(
  roots: Tensor[],
  grads: Tensor[],
  hook: GradFinalHook | null,
): Generator<void, void, void> {
  const pending = new Map<Tensor, Tensor>();
  roots.forEach((r, i) => {
    const g = grads[i];
    if (!r.requiresGrad) throw new GpuError(`backward: ${r} does not require grad`);
    if (!r.node) accumulateLeaf(r, keep(g.alias()));
    else pending.set(r, keep(g.alias()));
  });
  const order = topoOrder(roots);
  // For the grad-final hook: how many recorded uses of each leaf are still to be walked.
  const usesLeft = new Map<Tensor, number>();
  if (hook) {
    for (const t of order) {
      for (const x of t.node!.inputs) if (x && !x.node) usesLeft.set(x, (usesLeft.get(x) ?? 0) + 1);
    }
    roots.forEach((r) => {
      if (!r.node && !usesLeft.has(r)) hook(r);
    });
  }
  const walked = (node: GradNode) => {
    if (!hook) return;
    for (const x of node.inputs) {
      if (!x || x.node) continue;
      const n = usesLeft.get(x)! - 1;
      usesLeft.set(x, n);
      if (n === 0) hook(x);
    }
  };
  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k];
    const node = t.node!;
    const g = pending.get(t);
    pending.delete(t);
    t.node = null;
    if (!g) {
      node.release();
      walked(node);
      yield;
      continue;
    }
    const ins = tidy(() => {
      const r = node.backward(g);
      if (r.length !== node.inputs.length) {
        throw new GpuError(`backward of '${node.op}' returned ${r.length} grads`);
      }
      return r;
    });
    g.dispose();
    node.release();
    ins.forEach((gi, i) => {
      const input = node.inputs[i];
      if (!gi) return;
      if (!input) {
        gi.dispose();
        return;
      }
      keep(gi);
      if (!sameShape(gi.shape, input.shape)) {
        throw new GpuError(
          `backward of '${node.op}': gradient [${gi.shape}] for input [${input.shape}]`,
        );
      }
      if (!input.node) accumulateLeaf(input, gi);
      else {
        const prev = pending.get(input);
        if (prev) {
          registeredAccumulator(prev, gi);
          gi.dispose();
        } else pending.set(input, gi);
      }
    });
    walked(node);
    yield;
  }
  for (const g of pending.values()) g.dispose();
}

/** Drops the graph below `t` without computing gradients (frees saved activations). */
export function releaseGraph(t: Tensor): void {
  for (const x of topoOrder([t])) {
    x.node?.release();
    x.node = null;
  }
}
