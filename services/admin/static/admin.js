// The accounts page's only script: "Check connection", the delete confirmation, and
// showing only the fields of the chosen authentication method (without the script every
// field shows, and the server ignores the OAuth2 fields of a password account).
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

function shownFor(audience, method) {
  if (audience === "password") return method === "password" || method === "kerberos";
  if (audience === "oauth2") return method.startsWith("oauth2_");
  return audience === method;
}

function followAuthentication(form) {
  const method = form.elements["authentication"];
  const provider = form.elements["oauth2.provider"];
  const connect = document.getElementById("connect-oauth");
  const apply = () => {
    for (const element of form.querySelectorAll("[data-shown-for]")) {
      element.hidden = !shownFor(element.dataset.shownFor, method.value);
    }
    if (connect && provider) {
      connect.textContent = provider.value === "microsoft" ? "Connect with Microsoft" : "Connect with the identity provider";
    }
  };
  method.addEventListener("change", apply);
  if (provider) provider.addEventListener("change", apply);
  apply();
}

document.addEventListener("DOMContentLoaded", () => {
  const accountForm = document.getElementById("account-form");
  if (accountForm && accountForm.elements["authentication"]) followAuthentication(accountForm);
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
