// The accounts page's only script: "Check connection" and the delete confirmation.
// Every text from the server goes in with textContent, never innerHTML, so a mail
// server's reply shows as the characters it sent.
"use strict";

function show(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function checkMessage(report) {
  if (report.ok) {
    const count = report.messages === null ? "" : ` ${report.messages} messages in the folder.`;
    return `Connection OK: every step passed.${count}`;
  }
  const failed = report.steps.find((step) => step.outcome === "failed");
  return `Connection failed at ${failed.name}: ${failed.detail}`;
}

async function checkConnection(button) {
  const form = button.form;
  const message = document.getElementById("check-message");
  const reply = document.getElementById("check-reply");
  const copy = document.getElementById("copy-reply");
  const steps = document.getElementById("check-steps");
  show(message, "Checking the connection…");
  show(reply, "");
  copy.hidden = true;
  steps.replaceChildren();
  button.disabled = true;
  try {
    const response = await fetch("/accounts/check", {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (response.redirected) {
      // The server sends an ended session to the login page.
      show(message, "Cannot check: your session has ended; log in again.");
      return;
    }
    const body = await response.json().catch(() => null);
    if (!response.ok || body === null) {
      const problems = body && Array.isArray(body.detail)
        ? body.detail.map((p) => `${p.field || "account"}: ${p.msg}`).join("; ")
        : `HTTP ${response.status}`;
      show(message, `Cannot check: ${problems}`);
      return;
    }
    show(message, checkMessage(body));
    const failed = body.steps.find((step) => step.outcome === "failed");
    if (failed && failed.server_reply) {
      show(reply, failed.server_reply);
      copy.hidden = false;
    }
    for (const step of body.steps) {
      const item = document.createElement("li");
      item.className = step.outcome;
      item.textContent = `${step.name}: ${step.outcome} in ${step.milliseconds} ms — ${step.detail}`;
      if (step.server_reply) {
        const server = document.createElement("code");
        server.textContent = step.server_reply;
        item.append(document.createElement("br"), "server: ", server);
      }
      steps.append(item);
    }
  } catch (error) {
    show(message, `Cannot check: ${error}`);
  } finally {
    button.disabled = false;
  }
}

async function copyReply() {
  const reply = document.getElementById("check-reply");
  try {
    await navigator.clipboard.writeText(reply.textContent);
  } catch (error) {
    // Without clipboard access (plain HTTP), select the text for Ctrl+C instead.
    window.getSelection().selectAllChildren(reply);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const check = document.getElementById("check-connection");
  if (check) {
    check.addEventListener("click", () => checkConnection(check));
    document.getElementById("copy-reply").addEventListener("click", copyReply);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
