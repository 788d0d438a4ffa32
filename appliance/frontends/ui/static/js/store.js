/**
 * The board as this page knows it, kept from the box's messages only
 * (docs/protocol.md §6): the UI is drawn from here, never from what it sent.
 *
 * Change events (`change`, `detail.kind`):
 *   structure  tracks or chains changed (add, remove, move, a whole new board)
 *   bypass     a plugin's bypass (`plugin_id`)
 *   param      one value (`plugin_id`, `parameter_id`, `reply_to`)
 *   values     a plugin's whole map (`plugin_id`, `reply_to`)
 *   catalog    the catalog arrived
 *   library    pedalboard, snapshot or setlist state
 *   pedalboards  the PEDALBOARDS list (names with their snapshots)
 *   meters     a METERS event
 *   tuner      the stage tuner went on or off
 *   health     engine report (BOARD_STATE's engine, HEALTH, engine events)
 *   mixer      the HAT's mixer
 *   midi       the MIDI mappings, inputs or the learn under way
 *   tempo      the box's tempo (`bpm`, and who set it: `source`)
 *   midi-learned  a learn made a mapping (`mapping`)
 *   plugin-state  a plugin died or came back (`plugin_id`)
 */

export class Store extends EventTarget {
  constructor() {
    super();
    /** @type {{track_id: string, inputs: string[], outputs: string[], chain: string[]}[]} */
    this.tracks = [];
    /** @type {Map<string, object>} plugin_id → {track_id, plugin_id, name, plugin, uri, parameters, bypass} */
    this.plugins = new Map();
    this.catalog = { plugins: [], installed: [], byKey: new Map(), byUri: new Map() };
    this.library = null;
    this.pedalboards = [];
    this.engine = null;
    this.meters = null;
    this.tuner = { on: false };
    this.mixer = { present: false, controls: [] };
    /** MIDI_STATE: whether the box hears MIDI, its inputs, mappings and the learn under way. */
    this.midi = { present: false, inputs: [], mappings: [], learning: null };
    /** TEMPO: the box's one tempo (docs/protocol.md §19). */
    this.tempo = { bpm: null, source: "default" };
    /** FILE_LIST: the player's files by folder (null until asked). */
    this.files = null;
    /** plugin_id → "died" while the engine restarts it. */
    this.pluginTrouble = new Map();
    /** False from a new connection until its BOARD_STATE: board events before it are in it. */
    this.synced = false;
  }

  /** A new connection: board events are ignored until its BOARD_STATE arrives. */
  beginSync() {
    this.synced = false;
  }

  /** The catalog entry of a plugin on the board (null for an unknown plugin). */
  describe(plugin) {
    if (!plugin) return null;
    return this.catalog.byKey.get(plugin.plugin) || this.catalog.byUri.get(plugin.uri) || null;
  }

  track(trackId) {
    return this.tracks.find((t) => t.track_id === trackId) || null;
  }

  /** Apply one message from the box. */
  apply(message) {
    const data = message.data || {};
    const replyTo = message.reply_to;
    switch (message.type) {
      case "BOARD_STATE":
        this._board(data);
        this.synced = true;
        break;
      case "CATALOG":
        this._catalog(data);
        break;
      case "PLUGIN_ADD":
        if (this.synced) this._added(data);
        break;
      case "PLUGIN_REMOVE":
        if (this.synced) this._removed(data);
        break;
      case "PLUGIN_MOVE":
        if (this.synced) this._moved(data);
        break;
      case "PLUGIN_BYPASS": {
        const plugin = this.synced && this.plugins.get(data.plugin_id);
        if (plugin) {
          plugin.bypass = Boolean(data.bypass);
          this._emit("bypass", { plugin_id: data.plugin_id, reply_to: replyTo });
        }
        break;
      }
      case "PLUGIN_PARAMETER": {
        const plugin = this.synced && this.plugins.get(data.plugin_id);
        if (plugin) {
          plugin.parameters[data.parameter_id] = data.parameter_value;
          this._emit("param", {
            plugin_id: data.plugin_id,
            parameter_id: data.parameter_id,
            reply_to: replyTo,
          });
        }
        break;
      }
      case "FILE_LIST":
        this.files = data.files && typeof data.files === "object" ? data.files : {};
        this._emit("files", { reply_to: replyTo });
        break;
      case "PLUGIN_FILE": {
        const plugin = this.synced && this.plugins.get(data.plugin_id);
        if (plugin) {
          plugin.files = { ...plugin.files, [data.file_id]: data.file };
          this._emit("file", { plugin_id: data.plugin_id, reply_to: replyTo });
        }
        break;
      }
      case "PLUGIN_PRESET":
      case "PLUGIN_PARAMETERS_GET": {
        const plugin = this.synced && this.plugins.get(data.plugin_id);
        const values = data.preset_data || data.parameters;
        if (plugin && values) {
          plugin.parameters = { ...values };
          this._emit("values", { plugin_id: data.plugin_id, reply_to: replyTo });
        }
        break;
      }
      case "PEDALBOARD_STATE":
        this.library = data;
        this._emit("library", {});
        break;
      case "PEDALBOARDS":
        this.pedalboards = Array.isArray(data.pedalboards) ? data.pedalboards : [];
        this._emit("pedalboards", {});
        break;
      case "METERS":
        this.meters = data;
        if (typeof data.dsp_load === "number") {
          this.engine = { ...(this.engine || {}), dsp_load: data.dsp_load, xruns: data.xruns };
        }
        this._emit("meters", {});
        break;
      case "TUNER":
        this.tuner = { on: Boolean(data.on) };
        this._emit("tuner", { reply_to: replyTo });
        break;
      case "HEALTH":
        this.engine = { ...(this.engine || {}), ...data };
        this._emit("health", {});
        break;
      case "MIXER":
        this.mixer = { present: Boolean(data.present), controls: data.controls || [] };
        this._emit("mixer", { reply_to: replyTo });
        break;
      case "MIDI_STATE":
        this.midi = {
          present: Boolean(data.present),
          inputs: data.inputs || [],
          mappings: data.mappings || [],
          learning: data.learning || null,
        };
        this._emit("midi", { reply_to: replyTo });
        break;
      case "TEMPO":
        this.tempo = { bpm: typeof data.bpm === "number" ? data.bpm : null, source: data.source || "" };
        this._emit("tempo", { reply_to: replyTo });
        break;
      case "MIDI_LEARNED":
        this._emit("midi-learned", { mapping: data.mapping });
        break;
      case "ENGINE_EVENT":
        this._engineEvent(data);
        break;
      default:
        break; // types this page does not know are ignored (protocol.md §6)
    }
  }

  // -- internals ----------------------------------------------------------------

  _emit(kind, detail) {
    this.dispatchEvent(new CustomEvent("change", { detail: { kind, ...detail } }));
  }

  _board(data) {
    this.tracks = [];
    this.plugins = new Map();
    for (const track of data.tracks || []) {
      const chain = [];
      for (const plugin of track.plugins || []) {
        this.plugins.set(plugin.plugin_id, this._plugin(plugin, Boolean(plugin.bypass)));
        chain.push(plugin.plugin_id);
      }
      this.tracks.push({
        track_id: track.track_id,
        inputs: track.inputs || [],
        outputs: track.outputs || [],
        chain,
      });
    }
    if (data.engine) this.engine = { ...(this.engine || {}), ...data.engine };
    for (const id of [...this.pluginTrouble.keys()]) if (!this.plugins.has(id)) this.pluginTrouble.delete(id);
    this._emit("structure", {});
    this._emit("health", {});
  }

  _plugin(data, bypass) {
    return {
      track_id: data.track_id,
      plugin_id: data.plugin_id,
      name: data.name,
      plugin: data.plugin,
      uri: data.uri,
      parameters: { ...(data.parameters || {}) },
      files: { ...(data.files || {}) },
      bypass,
    };
  }

  _catalog(data) {
    const plugins = Array.isArray(data.plugins) ? data.plugins : [];
    const installed = Array.isArray(data.installed) ? data.installed : [];
    const byKey = new Map(plugins.map((p) => [p.key, p]));
    const byUri = new Map();
    for (const p of installed) if (Array.isArray(p.parameters)) byUri.set(p.uri, p);
    this.catalog = { plugins, installed, byKey, byUri };
    this._emit("catalog", {});
  }

  _added(data) {
    let track = this.track(data.track_id);
    if (!track) {
      track = { track_id: data.track_id, inputs: [], outputs: [], chain: [] };
      this.tracks.push(track);
    }
    track.chain = track.chain.filter((id) => id !== data.plugin_id);
    const at = Number.isInteger(data.position) ? Math.min(Math.max(data.position, 0), track.chain.length) : track.chain.length;
    track.chain.splice(at, 0, data.plugin_id);
    this.plugins.set(data.plugin_id, this._plugin(data, false));
    this._emit("structure", { plugin_id: data.plugin_id, added: true });
  }

  _removed(data) {
    const track = this.track(data.track_id);
    if (track) track.chain = track.chain.filter((id) => id !== data.plugin_id);
    this.plugins.delete(data.plugin_id);
    this.pluginTrouble.delete(data.plugin_id);
    this._emit("structure", { plugin_id: data.plugin_id, removed: true });
  }

  _moved(data) {
    const track = this.track(data.track_id);
    if (!track || !track.chain.includes(data.plugin_id)) return;
    track.chain = track.chain.filter((id) => id !== data.plugin_id);
    const at = Math.min(Math.max(data.position, 0), track.chain.length);
    track.chain.splice(at, 0, data.plugin_id);
    this._emit("structure", { plugin_id: data.plugin_id });
  }

  _engineEvent(data) {
    if (data.kind === "plugin-died" && data.plugin_id) this.pluginTrouble.set(data.plugin_id, "died");
    if (data.kind === "plugin-restored" && data.plugin_id) this.pluginTrouble.delete(data.plugin_id);
    if (data.kind === "engine-died" || data.kind === "engine-stalled") this.engine = { ...(this.engine || {}), running: false };
    if (data.kind === "engine-restored") this.engine = { ...(this.engine || {}), running: true };
    this._emit("plugin-state", { plugin_id: data.plugin_id, kind: data.kind, message: data.message });
    this._emit("health", {});
  }
}
