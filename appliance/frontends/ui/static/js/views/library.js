/**
 * Pedalboards, snapshots and the setlist (protocol.md §14): browse, load,
 * save, save as, rename, copy, delete, share with another box (one file with
 * the IRs and models it loads) and import one; recall a snapshot with one
 * tap; build the night's setlist.
 */

import { coalesce, fill, h } from "../dom.js";
import { askName, chooseAction, confirmAction, toast, toastError } from "../dialogs.js";
import { importPedalboard, pickFiles, progressIn, shareUrl } from "../uploads.js";

/** Snapshots a pedalboard may keep (protocol.md §14). */
const MAX_SNAPSHOTS = 8;

export function libraryView({ store, actions, router }) {
  let main = null;

  const render = coalesce(() => {
    if (!main) return;
    const state = store.library;
    if (!state) {
      fill(main, h("p", { class: "muted" }, "Waiting for the box…"));
      return;
    }
    fill(main, h("h1", { class: "visually-hidden" }, "Pedalboards"), nowPlaying(state), snapshots(state), pedalboards(state), setlist(state));
  });

  // -- now playing ------------------------------------------------------------------

  function nowPlaying(state) {
    return h(
      "section",
      { class: "card", "aria-labelledby": "now-title" },
      h("h2", { id: "now-title" }, "Now playing"),
      h(
        "p",
        { class: "now-name", id: "now-name" },
        state.pedalboard || "Unsaved board",
        state.modified && state.pedalboard ? [" ", h("span", { class: "tag" }, "changed")] : null,
      ),
      state.snapshot ? h("p", { class: "muted" }, `Snapshot: ${state.snapshot}`) : null,
      h(
        "div",
        { class: "row" },
        h("button", {
          type: "button",
          class: "primary needs-live",
          text: "Save",
          disabled: !state.pedalboard,
          "aria-label": state.pedalboard ? `Save over ${state.pedalboard}` : "Save",
          onclick: save,
        }),
        h("button", { type: "button", class: "needs-live", text: "Save as…", onclick: () => saveAs(state) }),
        h("a", { class: "button", href: "#/perform" }, "Perform ★"),
      ),
    );
  }

  async function save() {
    const done = await actions.library("PEDALBOARD_SAVE", {});
    if (done) toast(`Saved ${done.data.pedalboard}`);
  }

  async function saveAs(state) {
    const answer = await askName({
      title: "Save the board as a pedalboard",
      value: state.pedalboard || "",
      option: { label: "Let delay and reverb tails ring on when switching away", value: state.spillover !== false },
    });
    if (!answer) return;
    const data = { name: answer.name, spillover: answer.option };
    try {
      await actions.libraryRaw("PEDALBOARD_SAVE", data);
      toast(`Saved ${answer.name}`);
    } catch (error) {
      if (error.code !== "NAME_TAKEN") {
        toastError(error);
        return;
      }
      const replace = await confirmAction({
        title: `Replace ${answer.name}?`,
        message: "A pedalboard of that name exists. Its snapshots are kept by the board saved over it.",
        ok: "Replace",
        danger: true,
      });
      if (replace && (await actions.library("PEDALBOARD_SAVE", { ...data, overwrite: true }))) toast(`Saved ${answer.name}`);
    }
  }

  // -- snapshots ---------------------------------------------------------------------

  function snapshots(state) {
    const names = state.snapshots || [];
    const body = state.pedalboard
      ? [
          names.length
            ? h(
                "div",
                { class: "snapshots" },
                names.map((name) =>
                  h(
                    "div",
                    { class: "snapshot" },
                    h("button", {
                      type: "button",
                      class: "needs-live",
                      text: name,
                      "aria-pressed": String(name === state.snapshot),
                      "aria-label": `Recall snapshot ${name}`,
                      onclick: () => actions.library("SNAPSHOT_RECALL", { name }),
                    }),
                    h("button", {
                      type: "button",
                      class: "quiet needs-live",
                      text: "⋯",
                      "aria-label": `More for snapshot ${name}`,
                      onclick: () => snapshotMenu(name),
                    }),
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No snapshots yet: set the sound, then save one."),
          h(
            "div",
            { class: "row", style: "margin-top:.6rem" },
            h("button", {
              type: "button",
              class: "needs-live",
              text: "+ Save snapshot…",
              disabled: names.length >= MAX_SNAPSHOTS,
              onclick: () => saveSnapshot(names),
            }),
          ),
        ]
      : h("p", { class: "muted" }, "Snapshots belong to a pedalboard: save the board as one first.");
    return h(
      "section",
      { class: "card", "aria-labelledby": "snap-title" },
      h("h2", { id: "snap-title" }, state.pedalboard ? `Snapshots of ${state.pedalboard}` : "Snapshots"),
      body,
    );
  }

  async function saveSnapshot(names) {
    const answer = await askName({ title: "Save a snapshot", label: "Snapshot name", value: "" });
    if (!answer) return;
    if (names.includes(answer.name)) {
      const replace = await confirmAction({ title: `Replace snapshot ${answer.name}?`, ok: "Replace", danger: true });
      if (!replace) return;
    }
    if (await actions.library("SNAPSHOT_SAVE", { name: answer.name })) toast(`Snapshot ${answer.name} saved`);
  }

  async function snapshotMenu(name) {
    const choice = await chooseAction({
      title: `Snapshot ${name}`,
      actions: [
        { label: "Save the current sound into it", value: "save" },
        { label: "Rename…", value: "rename" },
        { label: "Delete", value: "delete", danger: true },
      ],
    });
    if (choice === "save") {
      if (await actions.library("SNAPSHOT_SAVE", { name })) toast(`Snapshot ${name} saved`);
    } else if (choice === "rename") {
      const answer = await askName({ title: `Rename snapshot ${name}`, value: name, ok: "Rename" });
      if (answer && answer.name !== name) await actions.library("SNAPSHOT_RENAME", { name, new_name: answer.name });
    } else if (choice === "delete") {
      if (await confirmAction({ title: `Delete snapshot ${name}?`, ok: "Delete", danger: true })) {
        await actions.library("SNAPSHOT_DELETE", { name });
      }
    }
  }

  // -- pedalboards --------------------------------------------------------------------

  function pedalboards(state) {
    const names = state.pedalboards || [];
    const details = new Map(store.pedalboards.map((p) => [p.name, p]));
    return h(
      "section",
      { class: "card", "aria-labelledby": "boards-title" },
      h("h2", { id: "boards-title" }, "Pedalboards"),
      names.length
        ? h(
            "ul",
            { class: "list", id: "pedalboard-list" },
            names.map((name) => {
              const info = details.get(name);
              const count = info && Array.isArray(info.snapshots) ? info.snapshots.length : null;
              return h(
                "li",
                { class: name === state.pedalboard ? "current" : "" },
                h(
                  "button",
                  {
                    type: "button",
                    class: "grow needs-live",
                    "aria-label": `Load ${name}`,
                    "aria-current": name === state.pedalboard ? "true" : null,
                    onclick: () => load(name),
                  },
                  name,
                  count ? h("span", { class: "muted small" }, ` · ${count} snapshot${count === 1 ? "" : "s"}`) : null,
                ),
                h("button", {
                  type: "button",
                  class: "quiet needs-live",
                  text: "⋯",
                  "aria-label": `More for ${name}`,
                  onclick: () => pedalboardMenu(name),
                }),
              );
            }),
          )
        : h("p", { class: "muted" }, "No pedalboards saved yet."),
      importButton(),
    );
  }

  /** "Import a pedalboard…": a file shared by another box, with the files it loads. */
  function importButton() {
    const outcome = h("p", { class: "muted small", role: "status" });
    async function send([file]) {
      const sent = await importPedalboard(file, progressIn(outcome, file));
      fill(outcome);
      if (sent.ok) toast(`Imported as ${sent.answer.name}`);
      else toast(sent.error, { bad: true });
    }
    return h("div", {}, ...pickFiles({ label: "Import a pedalboard…", accept: ".zip", onPick: send }), outcome);
  }

  /** Download the pedalboard `name` as one file another box imports. */
  function share(name) {
    const link = h("a", { href: shareUrl(name), download: "" });
    document.body.append(link);
    link.click();
    link.remove();
  }

  async function load(name) {
    const state = store.library;
    if (state && state.modified && store.plugins.size) {
      const sure = await confirmAction({
        title: `Load ${name}?`,
        message: "The board playing has changes that are not saved in a pedalboard; they will be gone.",
        ok: "Load",
      });
      if (!sure) return;
    }
    toast(`Loading ${name}…`);
    if (await actions.library("PEDALBOARD_LOAD", { name })) toast(`${name} is playing`);
  }

  async function pedalboardMenu(name) {
    const choice = await chooseAction({
      title: name,
      actions: [
        { label: "Add to the setlist", value: "setlist" },
        { label: "Rename…", value: "rename" },
        { label: "Copy…", value: "copy" },
        { label: "Share (download)", value: "share" },
        { label: "Delete", value: "delete", danger: true },
      ],
    });
    if (choice === "share") {
      share(name);
    } else if (choice === "setlist") {
      await setEntries([...entries(), { pedalboard: name }], currentPosition());
    } else if (choice === "rename") {
      const answer = await askName({ title: `Rename ${name}`, value: name, ok: "Rename" });
      if (answer && answer.name !== name) await actions.library("PEDALBOARD_RENAME", { name, new_name: answer.name });
    } else if (choice === "copy") {
      const answer = await askName({ title: `Copy ${name}`, value: `${name} copy`, ok: "Copy" });
      if (answer) await actions.library("PEDALBOARD_COPY", { name, new_name: answer.name });
    } else if (choice === "delete") {
      const sure = await confirmAction({
        title: `Delete ${name}?`,
        message: "Its snapshots go with it, and its setlist entries too. The board playing keeps playing.",
        ok: "Delete",
        danger: true,
      });
      if (sure) await actions.library("PEDALBOARD_DELETE", { name });
    }
  }

  // -- setlist ---------------------------------------------------------------------------

  function entries() {
    const state = store.library;
    return state && state.setlist && Array.isArray(state.setlist.entries) ? state.setlist.entries.map((e) => ({ ...e })) : [];
  }

  function currentPosition() {
    const state = store.library;
    return state && state.setlist && Number.isInteger(state.setlist.position) ? state.setlist.position : null;
  }

  /** Replace the setlist, keeping the position on the same entry where it can. */
  async function setEntries(list, position) {
    const data = { entries: list.map((e) => (e.snapshot ? { pedalboard: e.pedalboard, snapshot: e.snapshot } : { pedalboard: e.pedalboard })) };
    if (position !== null && position >= 0 && position < list.length) data.position = position;
    return actions.library("SETLIST_SET", data);
  }

  function setlist(state) {
    const list = entries();
    const position = currentPosition();
    const canAdd = Boolean(state.pedalboard);
    return h(
      "section",
      { class: "card", "aria-labelledby": "setlist-title" },
      h("h2", { id: "setlist-title" }, "Setlist"),
      list.length
        ? h(
            "ol",
            { class: "list", id: "setlist" },
            list.map((entry, i) =>
              h(
                "li",
                { class: i === position ? "current" : "" },
                h("button", {
                  type: "button",
                  class: "grow needs-live",
                  text: `${i + 1}. ${entry.pedalboard}${entry.snapshot ? ` · ${entry.snapshot}` : ""}`,
                  "aria-current": i === position ? "step" : null,
                  onclick: () => actions.library("SETLIST_GO", { position: i }),
                }),
                h("button", {
                  type: "button",
                  class: "quiet needs-live",
                  text: "▲",
                  "aria-label": `Move entry ${i + 1} up`,
                  disabled: i === 0,
                  onclick: () => moveEntry(i, i - 1),
                }),
                h("button", {
                  type: "button",
                  class: "quiet needs-live",
                  text: "▼",
                  "aria-label": `Move entry ${i + 1} down`,
                  disabled: i === list.length - 1,
                  onclick: () => moveEntry(i, i + 1),
                }),
                h("button", {
                  type: "button",
                  class: "quiet danger needs-live",
                  text: "✕",
                  "aria-label": `Remove entry ${i + 1} from the setlist`,
                  onclick: () => removeEntry(i),
                }),
              ),
            ),
          )
        : h("p", { class: "muted" }, "The setlist is empty: add pedalboards in the order you play them."),
      h(
        "div",
        { class: "row", style: "margin-top:.6rem" },
        h("button", {
          type: "button",
          class: "needs-live",
          text: state.snapshot ? `+ Add ${state.pedalboard} · ${state.snapshot}` : "+ Add the pedalboard playing",
          disabled: !canAdd,
          onclick: () => setEntries([...list, { pedalboard: state.pedalboard, snapshot: state.snapshot || undefined }], position),
        }),
      ),
    );
  }

  async function moveEntry(from, to) {
    const list = entries();
    const [entry] = list.splice(from, 1);
    list.splice(to, 0, entry);
    let position = currentPosition();
    if (position === from) position = to;
    else if (position === to) position = from;
    await setEntries(list, position);
  }

  async function removeEntry(index) {
    const list = entries();
    const entry = list[index];
    const sure = await confirmAction({ title: `Take ${entry.pedalboard} off the setlist?`, ok: "Remove", danger: true });
    if (!sure) return;
    list.splice(index, 1);
    let position = currentPosition();
    if (position !== null && position > index) position -= 1;
    else if (position === index) position = null;
    await setEntries(list, position);
  }

  function onChange(event) {
    const { kind } = event.detail;
    if (kind === "library") {
      actions.listPedalboards();
      render();
    } else if (kind === "pedalboards") {
      render();
    }
  }

  return {
    mount(container) {
      main = container;
      store.addEventListener("change", onChange);
      actions.listPedalboards();
      render();
    },
    unmount() {
      store.removeEventListener("change", onChange);
      main = null;
    },
  };
}
