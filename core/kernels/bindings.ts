/**
 * A kernel's bind group, declared once. `Gpu.dispatch` binds the uniforms at @binding(0) and
 * its list of buffers and texture views at @binding(1..n) in order, so the WGSL declarations are
 * numbered here from one ordered list, written in the order the launcher passes its resources:
 * the numbering cannot drift from the dispatch. Optional operands are left out of both lists
 * (`null` entries are skipped), which keeps the auto layout and the bound resources in step.
 */

/** Storage access of a buffer binding. */
export type Access = "read" | "read_write";

/**
 * One bound resource: a storage array `[name, access, element type]`, or a texture
 * `[name, "texture", WGSL texture type]` (e.g. `texture_2d_array<f32>`,
 * `texture_storage_2d<rgba32float, write>`).
 */
export type Binding = [string, Access | "texture", string];

/** `b` when `on`, else null (an optional operand left out of {@link bindings}). */
export const opt = (on: boolean, b: Binding): Binding | null => (on ? b : null);

/** The declaration of one resource at `binding`. */
export function bindingDecl([name, access, type]: Binding, binding: number): string {
  const v = access === "texture"
    ? `var ${name}: ${type}`
    : `var<storage, ${access}> ${name}: array<${type}>`;
  return `@group(0) @binding(${binding}) ${v};`;
}

/** WGSL declarations of `list` at @binding(1), @binding(2), ... in order, skipping nulls. */
export function bindings(list: (Binding | null)[]): string {
  return list.filter((b): b is Binding => b !== null).map((b, i) => bindingDecl(b, i + 1)).join(
    "\n",
  );
}

/** The uniform block `u` of struct type `struct` at @binding(0), where `Gpu.dispatch` binds it. */
export function uniformBinding(struct = "U"): string {
  return `@group(0) @binding(0) var<uniform> u: ${struct};`;
}
