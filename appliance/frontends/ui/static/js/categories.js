/**
 * Which kind of effect a catalog plugin is, for the "add" view: the catalog's
 * own `category` when it has one, else the shipped keys, else words in its
 * name. Plugins outside the curated catalog are "other installed".
 */

/** The groups in the order a guitarist's chain runs. */
export const GROUPS = [
  ["drive", "Drive"],
  ["amp", "Amp"],
  ["dynamics", "Dynamics"],
  ["eq", "EQ"],
  ["modulation", "Modulation"],
  ["delay", "Delay"],
  ["reverb", "Reverb"],
  ["utility", "Utility"],
];

const BY_KEY = {
  overdrive: "drive",
  amp: "amp",
  cabinet: "amp",
  amp_model: "amp",
  compressor: "dynamics",
  gate: "dynamics",
  eq: "eq",
  chorus: "modulation",
  delay: "delay",
  reverb: "reverb",
  gain: "utility",
  tuner: "utility",
};

const BY_WORD = [
  [/overdrive|distort|fuzz|drive|screamer|boost|crunch/i, "drive"],
  [/\bamp|cabinet|\bcab\b/i, "amp"],
  [/compress|gate|limit|expand|dynamic|sustain/i, "dynamics"],
  [/\beq\b|equali[sz]|filter|wah/i, "eq"],
  [/chorus|flang|phas|tremolo|vibrato|leslie|rotary|modul|ring ?mod/i, "modulation"],
  [/delay|echo/i, "delay"],
  [/reverb|room|hall|plate|spring|ambience/i, "reverb"],
];

/** The group key of a catalog entry ({key, name, category?}). */
export function groupOf(entry) {
  const own = entry.category || entry.group;
  if (typeof own === "string" && GROUPS.some(([key]) => key === own)) return own;
  if (BY_KEY[entry.key]) return BY_KEY[entry.key];
  const words = `${entry.key || ""} ${entry.name || ""}`;
  for (const [pattern, group] of BY_WORD) if (pattern.test(words)) return group;
  return "utility";
}
