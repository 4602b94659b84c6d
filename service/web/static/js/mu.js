// M-MAE's two mu conventions for TCR: the official code's logdet(I + (mu/d) ZᵀZ) and Def. 4.8's
// logdet(mu I + ZᵀZ). They give the same regulariser (up to a constant) when paper mu = d / official mu,
// a map that is its own inverse (mmae.info.equivalent_mu).

import { formatNumber } from "./format.js";

const FORMS = { official: "official, logdet(I + (μ/d) ZᵀZ)", paper: "Def. 4.8, logdet(μ I + ZᵀZ)" };
const NAMES = { official: "official", paper: "Def. 4.8" };
const OTHER = { official: "paper", paper: "official" };

/**
 * "1 (official, logdet(…)) = 192 in the Def. 4.8 convention (d = 192)": a run's mu and its equivalent in
 * the other convention; `dim` is the width d of the features TCR measures, known once the run reports it.
 */
export function muText(loss, dim) {
  const mu = loss?.mu;
  const convention = loss?.mu_convention;
  if (typeof mu !== "number" || !(convention in FORMS)) return null;
  const own = `${formatNumber(mu)} (${FORMS[convention]})`;
  const other = NAMES[OTHER[convention]];
  if (!dim) return `${own}; d / ${formatNumber(mu)} in the ${other} convention, d once the run reports it`;
  return `${own} = ${formatNumber(dim / mu)} in the ${other} convention (d = ${dim})`;
}
