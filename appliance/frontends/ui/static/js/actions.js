/**
 * What the views ask of the box, as protocol requests (docs/protocol.md §5,
 * §14). Requests that can fail in a way the player must hear about report it
 * as a toast and resolve to null.
 */

import { toastError } from "./dialogs.js";

export class Actions {
  /** @param {import("./connection.js").Connection} conn */
  constructor(conn) {
    this.conn = conn;
  }

  /** A request whose failure is shown to the player; its answer, or null. */
  async ask(type, data, expect) {
    try {
      return await this.conn.request(type, data, expect ? { expect } : {});
    } catch (error) {
      toastError(error);
      return null;
    }
  }

  /** One value (fire and forget: the echo updates the page). The request id, or null. */
  setParameter(plugin, parameterId, value) {
    return this.conn.send("PLUGIN_PARAMETER", {
      track_id: plugin.track_id,
      plugin_id: plugin.plugin_id,
      parameter_id: parameterId,
      parameter_value: value,
    });
  }

  setBypass(plugin, bypass) {
    return this.conn.send("PLUGIN_BYPASS", { track_id: plugin.track_id, plugin_id: plugin.plugin_id, bypass });
  }

  /** The plugin loads one of the player's files (`ir/cab.wav`); answered by PLUGIN_FILE. */
  setFile(plugin, fileId, file) {
    return this.ask("PLUGIN_FILE", { track_id: plugin.track_id, plugin_id: plugin.plugin_id, file_id: fileId, file }, "PLUGIN_FILE");
  }

  /** The player's files by folder ({ir: [...], models: [...], other: [...]}), or null. */
  async listFiles() {
    const reply = await this.ask("FILE_LIST", {}, "FILE_LIST");
    return reply ? reply.data.files : null;
  }

  /** Give one of the player's files (`ir/cab.wav`) a new name in its folder (`V30.wav`). */
  renameFile(file, newName) {
    return this.ask("FILE_RENAME", { file, new_name: newName }, "FILE_LIST");
  }

  deleteFile(file) {
    return this.ask("FILE_DELETE", { file }, "FILE_LIST");
  }

  /** Add a catalog plugin (by key) or an installed one (by URI) at the end of a track. */
  add(trackId, keyOrUri) {
    return this.ask("PLUGIN_ADD", { track_id: trackId, plugin_path: keyOrUri }, "PLUGIN_ADD");
  }

  remove(plugin) {
    return this.ask("PLUGIN_REMOVE", { track_id: plugin.track_id, plugin_id: plugin.plugin_id }, "PLUGIN_REMOVE");
  }

  move(plugin, position) {
    return this.ask("PLUGIN_MOVE", { track_id: plugin.track_id, plugin_id: plugin.plugin_id, position }, "PLUGIN_MOVE");
  }

  loadPreset(plugin, preset) {
    return this.ask("PRESET_LOAD", { track_id: plugin.track_id, plugin_id: plugin.plugin_id, preset }, "PLUGIN_PRESET");
  }

  /** A pedalboard, snapshot or setlist request; answered by PEDALBOARD_STATE. */
  library(type, data) {
    return this.ask(type, data, "PEDALBOARD_STATE");
  }

  /** The same, but the caller handles a refusal (the error is thrown). */
  libraryRaw(type, data) {
    return this.conn.request(type, data, { expect: "PEDALBOARD_STATE" });
  }

  listPedalboards() {
    return this.conn.send("PEDALBOARD_LIST", undefined, { quiet: true });
  }

  /** Start a MIDI learn for `mapping` (its action and target); answered by MIDI_STATE. */
  midiLearn(mapping) {
    return this.ask("MIDI_LEARN", { mapping }, "MIDI_STATE");
  }

  midiCancel() {
    return this.conn.send("MIDI_LEARN_CANCEL", undefined, { quiet: true });
  }

  /** Make or replace a mapping (by its id); answered by MIDI_STATE. */
  midiMap(mapping) {
    return this.ask("MIDI_MAP_SET", { mapping }, "MIDI_STATE");
  }

  midiForget(id) {
    return this.ask("MIDI_MAP_DELETE", { id }, "MIDI_STATE");
  }

  /** A typed tempo (20–300 BPM); answered by TEMPO. */
  setTempo(bpm) {
    return this.ask("TEMPO_SET", { bpm }, "TEMPO");
  }

  /** One tap of the tempo: the box times it (two taps set it). */
  tapTempo() {
    return this.conn.send("TEMPO_TAP", {}, { quiet: true });
  }

  setTuner(on) {
    return this.conn.send("TUNER_SET", { on }, { quiet: true });
  }
}
