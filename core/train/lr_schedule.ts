/**
 * Learning-rate schedules with diffusers' `get_scheduler` semantics, as multipliers of the base LR
 * for optimizer step s (0-based: the first update uses s = 0, as torch's LambdaLR does).
 */

export type ScheduleName = "constant" | "constant_with_warmup" | "linear" | "cosine";
export const SCHEDULES: ScheduleName[] = ["constant", "constant_with_warmup", "linear", "cosine"];

export interface ScheduleSpec {
  name: string;
  warmup: number;
  total: number;
  /** Cosine cycles (diffusers default 0.5: one half cosine down to zero). */
  cycles?: number;
}

/** Returns lambda(s); throws naming the setting when the name is unknown. */
export function lrLambda(spec: ScheduleSpec): (s: number) => number {
  const { warmup, total } = spec;
  const cycles = spec.cycles ?? 0.5;
  const warm = (s: number) => s / Math.max(1, warmup);
  switch (spec.name) {
    case "constant":
      return () => 1;
    case "constant_with_warmup":
      return (s) => (s < warmup ? warm(s) : 1);
    case "linear":
      return (s) => (s < warmup ? warm(s) : Math.max(0, (total - s) / Math.max(1, total - warmup)));
    case "cosine":
      return (s) => {
        if (s < warmup) return warm(s);
        const p = (s - warmup) / Math.max(1, total - warmup);
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * p)));
      };
    default:
      throw new Error(
        `optim.schedule: unknown LR schedule "${spec.name}" (expected ${SCHEDULES.join(", ")})`,
      );
  }
}
