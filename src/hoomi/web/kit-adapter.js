// @ts-check
/**
 * The page side of the browser adapter for the client conformance kit
 * (`python -m hoomi.web.adapter`, spec/v1/client-kit/README.md): it runs hoomi-client.js as
 * an app would and turns each kit command into calls on it and each thing the app sees
 * into a control-protocol event, handed to `report` (the adapter's exposed binding, which
 * writes it to stdout). The Python side only relays lines.
 */

import { ClientClosed, connect, RequestFailed } from "./hoomi-client.js";

/** @typedef {import("./hoomi-client.js").HoomiClient} HoomiClient */

/**
 * @param {(event: Record<string, unknown>) => void} report
 * @returns {(command: Record<string, any>) => void} what runs one command
 */
export function kitAdapter(report) {
  /** @type {HoomiClient | null} */
  let client = null;
  let token = "";
  let done = false; // `closed` was reported: nothing follows

  /** @param {Record<string, unknown>} event */
  const emit = (event) => {
    if (!done) report(event);
    if (event.event === "closed") done = true;
  };

  /** @param {string} url @param {Record<string, number>} positions */
  function start(url, positions) {
    const c = connect(url, { tokenProvider: () => token, positions });
    c.on("state", (change) => {
      emit({ event: "state", state: change.state, close_code: change.closeCode });
      if (change.state === "closed") {
        emit({ event: "closed", code: change.closeCode, reason: change.reason });
      }
    });
    c.on("message", (m) => {
      emit({
        event: "message",
        conversation_id: m.conversation_id,
        seq: m.seq,
        message_id: m.message_id,
        sender_id: m.sender_id,
        text: m.text,
        client_msg_id: m.client_msg_id ?? null,
      });
    });
    c.on("typing", (t) => {
      emit({ event: "typing", conversation_id: t.conversation_id, user_id: t.user_id, active: t.active });
    });
    c.on("presence", (p) => emit({ event: "presence", user_id: p.user_id, status: p.status }));
    c.on("receipt", (r) => {
      emit({ event: "receipt", conversation_id: r.conversation_id, user_id: r.user_id, seq: r.seq });
    });
    c.on("joined", (j) => emit({ event: "joined", conversation_id: j.conversation_id }));
    c.on("left", (l) => emit({ event: "left", conversation_id: l.conversation_id }));
    c.on("error", (e) => emit({ event: "error", code: e.code, message: e.message }));
    return c;
  }

  /** @param {Record<string, any>} command */
  async function send(command) {
    const ref = String(command.ref);
    if (client === null) {
      emit({ event: "send_failed", ref, code: "closed", message: "not connected" });
      return;
    }
    try {
      const ack = await client.send(String(command.conversation_id), String(command.text));
      emit({
        event: "ack",
        ref,
        conversation_id: ack.conversation_id,
        seq: ack.seq,
        message_id: ack.message_id,
        client_msg_id: ack.client_msg_id,
      });
    } catch (error) {
      if (error instanceof RequestFailed) {
        emit({ event: "send_failed", ref, code: error.code });
      } else if (error instanceof ClientClosed) {
        emit({ event: "send_failed", ref, code: "closed", message: error.reason });
      } else {
        throw error;
      }
    }
  }

  /** @param {Record<string, any>} command */
  async function read(command) {
    if (client === null) return;
    try {
      await client.read(String(command.conversation_id), Number(command.seq));
    } catch (error) {
      if (!(error instanceof RequestFailed || error instanceof ClientClosed)) throw error;
      emit({ event: "error", code: "read_failed", message: String(error) });
    }
  }

  return (command) => {
    switch (command.cmd) {
      case "connect":
        if (client === null) {
          token = String(command.token);
          client = start(String(command.url), command.positions ?? {});
        }
        break;
      case "token":
        token = String(command.token);
        emit({ event: "token_set" });
        break;
      case "send":
        void send(command);
        break;
      case "read":
        void read(command);
        break;
      case "close":
        if (client === null) emit({ event: "closed", code: null, reason: "never connected" });
        else if (client.state === "closed") emit({ event: "closed", code: null, reason: "closed" });
        else void client.close();
        break;
      default:
        emit({ event: "error", code: "bad_command", message: JSON.stringify(command.cmd) });
    }
  };
}
