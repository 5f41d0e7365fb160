"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("error");
  err.textContent = "";
  const body = JSON.stringify({user: document.getElementById("user").value,
                               password: document.getElementById("password").value});
  const r = await fetch("/api/v1/login", {method: "POST", body, headers: {"content-type": "application/json"},
                                           credentials: "same-origin"});
  if (r.ok) { window.location.replace("/"); return; }
  const data = await r.json().catch(() => ({}));
  err.textContent = (data.error || ("login failed: HTTP " + r.status)) + (data.hint ? " — " + data.hint : "");
});
