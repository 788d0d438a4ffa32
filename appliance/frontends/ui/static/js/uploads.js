/**
 * Sending the player's files, backups and system updates to the box (protocol.md
 * "Uploads", "Backups", "Updates"): one HTTP POST per file, its body the file
 * itself, with the phone's token. An XHR, not fetch: only XHR reports how much
 * of the body has gone (the progress bar).
 */

import { h } from "./dom.js";
import { currentToken } from "./pairing.js";

/** What the file picker offers: the kinds the box's plugins load, and zips of them. */
export const ACCEPT = ".wav,.flac,.aif,.aiff,.nam,.json,.aidax,.zip";
/** What the picker offers for a system update (image/card/build makes them). */
export const UPDATE_ACCEPT = ".update";

/**
 * Send `file` to the box as one of the player's files; `progress(fraction)` as it goes.
 *
 * @returns {Promise<{ok: true, answer: {files: string[]}} | {ok: false, error: string}>}
 */
export function uploadFile(file, progress) {
  return post(`/files?name=${encodeURIComponent(file.name)}`, file, progress, 201);
}

/**
 * Send a backup to the box to replace everything on it; `progress(fraction)` as it goes.
 * The box starts again with it once it is checked.
 *
 * @returns {Promise<{ok: true, answer: {restored: object}} | {ok: false, error: string}>}
 */
export function restoreBackup(file, progress) {
  return post("/restore", file, progress, 200);
}

/**
 * Send a system update to the box; `progress(fraction)` as it goes. Once it is checked the
 * box installs it to its other root and restarts by itself (protocol.md "Updates").
 *
 * @returns {Promise<{ok: true, answer: {update: {version: string, arch: string}}} | {ok: false, error: string}>}
 */
export function installUpdate(file, progress) {
  return post("/update", file, progress, 202);
}

/**
 * Send a pedalboard shared by another box (with the files it loads); `progress(fraction)`.
 *
 * @returns {Promise<{ok: true, answer: {name: string, files: string[]}} | {ok: false, error: string}>}
 */
export function importPedalboard(file, progress) {
  return post("/pedalboards/import", file, progress, 201);
}

/** The address that downloads the pedalboard `name` with its files, for another box. */
export function shareUrl(name) {
  const token = currentToken();
  const query = new URLSearchParams({ name });
  if (token) query.set("token", token);
  return `/pedalboards/share?${query}`;
}

/** The address that downloads a backup of everything on the box. */
export function backupUrl() {
  const token = currentToken();
  return token ? `/backup?token=${encodeURIComponent(token)}` : "/backup";
}

function post(url, file, progress, success) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    const token = currentToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) progress(event.loaded / event.total);
    };
    xhr.onload = () => {
      let answer = null;
      try {
        answer = JSON.parse(xhr.responseText);
      } catch {
        answer = null;
      }
      if (xhr.status === success && answer) resolve({ ok: true, answer });
      else resolve({ ok: false, error: (answer && answer.error) || `the box answered ${xhr.status}` });
    };
    xhr.onerror = () => resolve({ ok: false, error: "the upload was cut short (is the box still on the network?)" });
    xhr.send(file);
  });
}

/**
 * A button that opens the phone's file picker: `[hidden input, button]` to put in a page.
 * `onPick(files)` gets the picked files (never called for none).
 */
export function pickFiles({ label, accept, multiple = false, onPick }) {
  const picker = h("input", {
    type: "file",
    accept,
    multiple,
    class: "visually-hidden",
    onchange: () => {
      const files = [...picker.files];
      picker.value = "";
      if (files.length) onPick(files);
    },
  });
  return [picker, h("button", { type: "button", class: "needs-live", text: label, onclick: () => picker.click() })];
}

/** A progress bar for sending `file`, put into `place`; its `(fraction) => …` updater. */
export function progressIn(place, file) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": `Sending ${file.name}` });
  place.replaceChildren(bar);
  return (fraction) => (bar.value = fraction);
}
