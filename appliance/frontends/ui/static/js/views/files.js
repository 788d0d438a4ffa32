/**
 * The player's files (`#/files`): their impulse responses, amp models and
 * other files, by folder, each with Rename and Delete, and "Add files" that
 * sends files (or a zip of them) from the phone with a progress bar each. A rename keeps every
 * pedalboard that uses the file; a delete leaves them playing without it.
 * Every phone's list follows (FILE_LIST after each change).
 */

import { askName, confirmAction, toast } from "../dialogs.js";
import { fill, h } from "../dom.js";
import { backButton } from "../router.js";
import { ACCEPT, pickFiles, uploadFile } from "../uploads.js";

/** Each folder of the player's files, in the player's words. */
export const FOLDERS = { ir: "Impulse responses", models: "Amp models", other: "Other files" };

export function filesView({ store, actions, router }) {
  let main = null;
  let lists = null;
  let sending = null;

  function render() {
    lists = h("div", { id: "file-folders" });
    sending = h("ul", { class: "file-list uploads", "aria-label": "Files being sent" });
    fill(
      main,
      h(
        "div",
        { class: "plugin-head" },
        backButton(router, "health", "Back to health"),
        h("h1", {}, "Your files"),
      ),
      h(
        "section",
        { class: "card" },
        ...pickFiles({ label: "Add files…", accept: ACCEPT, multiple: true, onPick: send }),
        h("p", { class: "muted small" }, "Cabinet IRs (.wav), amp models (.nam, .json), or a .zip of them."),
        sending,
      ),
      lists,
    );
    update();
    actions.listFiles(); // the answer comes back as FILE_LIST, as every change does
  }

  function update() {
    if (!lists) return;
    const files = store.files;
    if (!files) {
      fill(lists, h("p", { class: "muted" }, "Asking the box…"));
      return;
    }
    fill(
      lists,
      Object.entries(FOLDERS).map(([folder, title]) => {
        const names = files[folder] || [];
        return h(
          "section",
          { class: "card" },
          h("h2", {}, title),
          names.length
            ? h("ul", { class: "file-list", "aria-label": title }, names.map((name) => fileItem(name)))
            : h("p", { class: "muted" }, "None yet."),
        );
      }),
    );
  }

  /** Send the picked files one after another, each with its own bar and outcome. */
  async function send(files) {
    for (const file of files) {
      const bar = h("progress", { max: 1, value: 0, "aria-label": `Sending ${file.name}` });
      const line = h("li", {}, h("span", { class: "file-name" }, file.name), bar);
      if (sending) sending.append(line);
      const outcome = await uploadFile(file, (fraction) => (bar.value = fraction));
      if (outcome.ok) {
        line.remove();
        toast(`${file.name} added`);
      } else {
        fill(line, h("span", { class: "file-name" }, file.name), h("span", { class: "error", role: "alert" }, outcome.error));
      }
    }
  }

  function fileItem(name) {
    const [folder, ...rest] = name.split("/");
    const short = rest.join("/");
    return h(
      "li",
      {},
      h("span", { class: "file-name" }, short),
      h("button", {
        type: "button",
        class: "quiet needs-live",
        "aria-label": `Rename ${short}`,
        text: "Rename",
        onclick: async () => {
          const answer = await askName({ title: `Rename ${short}`, label: "New name", value: short, ok: "Rename" });
          if (answer && answer.name !== short && (await actions.renameFile(name, answer.name))) {
            toast(`Renamed to ${answer.name}; pedalboards that use it follow.`);
          }
        },
      }),
      h("button", {
        type: "button",
        class: "quiet danger needs-live",
        "aria-label": `Delete ${short}`,
        text: "✕",
        onclick: async () => {
          const sure = await confirmAction({
            title: `Delete ${short}?`,
            message: `It goes from ${FOLDERS[folder] || folder}. Pedalboards that use it play without it.`,
            ok: "Delete",
            danger: true,
          });
          if (sure && (await actions.deleteFile(name))) toast(`${short} deleted`);
        },
      }),
    );
  }

  function onChange(event) {
    if (event.detail.kind === "files") update();
  }

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
      lists = null;
      sending = null;
    },
  };
}
