// The metric catalogue: names the trainer emits (notes/science-contracts.md), their labels, and the chart
// panels of a run page. A panel shows whichever of its metrics the run actually has.

const LABELS = {
  "train/loss": "loss",
  "train/lr": "learning rate",
  "train/mae_loss": "MAE loss",
  "train/tcr": "TCR term",
  "train/uniformity": "uniformity term",
  "train/step_time_s": "step time (s)",
  "info/tcr": "TCR",
  "info/entropy_a1": "matrix entropy (α=1)",
  "info/erank": "effective rank",
  "info/erank_centered": "effective rank, centred",
  "info/erank_target": "effective rank (target branch)",
  "info/mi_corr_a1": "MI, correlation (α=1)",
  "info/mi_corr_a2": "MI, correlation (α=2)",
  "info/mi_gram_a1": "MI, Gram (α=1)",
  "info/mi_gram_a2": "MI, Gram (α=2)",
  "info/joint_entropy_corr_a1": "joint entropy, correlation (α=1)",
  "info/joint_entropy_corr_a2": "joint entropy, correlation (α=2)",
  "info/joint_entropy_gram_a1": "joint entropy, Gram (α=1)",
  "info/joint_entropy_gram_a2": "joint entropy, Gram (α=2)",
  "info/js_corr": "matrix JS, correlation",
  "info/eigen_js_corr": "eigenspace JS, correlation",
  "info/js_gram": "matrix JS, Gram",
  "info/eigen_js_gram": "eigenspace JS, Gram",
  "probe/online_top1": "online probe top-1",
  "eval/linear_top1": "linear probe top-1",
  "eval/linear_top5": "linear probe top-5",
  "eval/knn_top1": "kNN top-1",
  "eval/knn_top5": "kNN top-5",
  "eval/finetune_top1": "fine-tune top-1",
  "eval/finetune_top5": "fine-tune top-5",
};

/** Chart panels of a run page, in the order of the paper's figures (losses first, then information). */
export const PANELS = [
  { id: "loss", title: "Loss", metrics: ["train/loss", "train/mae_loss"] },
  { id: "lr", title: "Learning rate", metrics: ["train/lr"] },
  {
    id: "mi",
    title: "Mutual information",
    metrics: ["info/mi_corr_a1", "info/mi_corr_a2", "info/mi_gram_a1", "info/mi_gram_a2"],
  },
  {
    id: "joint",
    title: "Joint entropy",
    metrics: [
      "info/joint_entropy_corr_a1",
      "info/joint_entropy_corr_a2",
      "info/joint_entropy_gram_a1",
      "info/joint_entropy_gram_a2",
    ],
  },
  { id: "entropy", title: "Matrix entropy", metrics: ["info/entropy_a1"] },
  {
    id: "erank",
    title: "Effective rank",
    metrics: ["info/erank", "info/erank_centered", "info/erank_target"],
  },
  { id: "tcr", title: "Total coding rate", metrics: ["info/tcr", "train/tcr"] },
  { id: "uniformity", title: "Uniformity term", metrics: ["train/uniformity"] },
  {
    id: "js",
    title: "JS divergence",
    metrics: ["info/js_corr", "info/eigen_js_corr", "info/js_gram", "info/eigen_js_gram"],
  },
  { id: "probe", title: "Probe accuracy", metrics: ["probe/online_top1"] },
];

/** Every metric a run page charts. */
export const CHARTED_METRICS = PANELS.flatMap((panel) => panel.metrics);

/** One headline metric per panel: what Compare and a sweep's overlaid curves offer by default. */
export const HEADLINE_METRICS = [
  "train/loss",
  "train/lr",
  "info/mi_corr_a1",
  "info/joint_entropy_corr_a1",
  "info/erank",
  "info/tcr",
  "info/js_corr",
  "probe/online_top1",
];

/** Final metrics a sweep plots against its swept parameter (Table 2: linear probe; Fig. 3: MI). */
export const SWEEP_FINAL_METRICS = [
  "eval/linear_top1",
  "eval/knn_top1",
  "probe/online_top1",
  "info/mi_corr_a1",
  "info/joint_entropy_corr_a1",
  "info/erank",
];

/** Columns of a sweep's cell table, when the cells have them: the plotted final metrics, then TCR and loss. */
export const SWEEP_TABLE_METRICS = [...SWEEP_FINAL_METRICS, "info/tcr", "train/loss"];

export function metricLabel(name) {
  return LABELS[name] ?? name;
}

/** Accuracies are fractions in [0, 1]; they are shown as percentages. */
export function isAccuracy(name) {
  return /top[15]$/.test(name);
}
