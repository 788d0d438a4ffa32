/**
 * The player's files (`#/files`): their impulse responses, amp models and
 * other files, by folder, each with Rename and Delete. A rename keeps every
 * pedalboard that uses the file; a delete leaves them playing without it.
 * Every phone's list follows (FILE_LIST after each change).
 */

import { askName, confirmAction, toast } from "../dialogs.js";
import { fill, h } from "../dom.js";
import { backButton } from "../router.js";

/** Each folder of the player's files, in the player's words. */
export const FOLDERS = { ir: "Impulse responses", models: "Amp models", other: "Other files" };

export function filesView({ store, actions, router }) {
  let main = null;
  let lists = null;

  function render() {
    lists = h("div", { id: "file-folders" });
    fill(
      main,
      h(
        "div",
        { class: "plugin-head" },
        backButton(router, "health", "Back to health"),
        h("h1", {}, "Your files"),
      ),
      lists,
      h("p", { class: "muted small" }, "Files are copied into the box's files folder (see the README)."),
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
    },
  };
}
