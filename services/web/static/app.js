// policyhub web pages: the chat's streaming answer and the feedback buttons.
// Loaded from 'self' under a strict CSP: no inline handlers, no eval, and every piece of
// server text goes in through textContent, never innerHTML.
"use strict";

(function () {
  const NOT_IN_POLICY = "not_in_policy";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body),
    });
  }

  // Server-sent events arrive as "event: name\ndata: json\n\n" blocks; a block may span reads.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function badge(text, kind) {
    const span = document.createElement("span");
    span.className = "badge " + kind;
    span.textContent = text;
    return span;
  }

  function setState(turn, kind, title, detail) {
    const state = turn.querySelector(".state");
    state.className = "state " + kind;
    state.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    state.appendChild(strong);
    if (detail) {
      const p = document.createElement("p");
      p.textContent = detail;
      state.appendChild(p);
    }
    state.hidden = false;
  }

  function citationCard(c) {
    const card = document.getElementById("citation-template").content.firstElementChild.cloneNode(true);
    card.querySelector(".policy-title").textContent = c.policy_title;
    card.querySelector(".clause").textContent = c.clause;
    card.querySelector(".policy-id").textContent = c.policy_id;
    card.querySelector(".version").textContent = c.version;
    card.querySelector(".effective").textContent = c.effective_date;
    card.querySelector(".excerpt").textContent = c.excerpt;
    card.querySelector(".clause-text").textContent = c.text || c.excerpt;
    return card;
  }

  function renderAnswer(turn, answer, tiers) {
    const badges = turn.querySelector(".badges");
    badges.replaceChildren();
    const tierName = tiers[String(answer.tier)];
    if (answer.refused) badges.appendChild(badge("not answered", "warn"));
    else badges.appendChild(badge("Tier " + answer.tier + (tierName ? " · " + tierName : ""), "tier"));
    if (answer.model) {
      badges.appendChild(badge(answer.model.name + "@" + answer.model.version + " · " + answer.model.zone, "model"));
    } else {
      badges.appendChild(badge("no model", "model"));
    }
    badges.appendChild(badge(answer.effective_classification, "classification"));

    const text = turn.querySelector(".answer-text");
    text.textContent = answer.answer;
    if (answer.refused && answer.refusal_reason === NOT_IN_POLICY) {
      setState(turn, "not-available", "Not available in policy",
        "No clause in the policies you may read answers this question. Try different words, " +
        "or ask the policy owner.");
      text.hidden = true;
    } else if (answer.refused) {
      setState(turn, "refused", "Refused", answer.refusal_reason || answer.answer);
      text.hidden = true;  // the reason above says it all
    }
    turn.querySelector(".review-flag").hidden = !answer.human_review_required;

    const section = turn.querySelector(".citations");
    const list = section.querySelector(".cards");
    list.replaceChildren(...answer.citations.map(citationCard));
    section.hidden = answer.citations.length === 0;

    const footer = turn.querySelector(".feedback");
    footer.dataset.requestId = answer.request_id;
    footer.querySelector(".request-id").textContent = "request " + answer.request_id;
    footer.hidden = false;
  }

  async function ask(form, conversation) {
    const question = form.querySelector("#question").value.trim();
    const status = document.getElementById("ask-status");
    if (!question) {
      status.textContent = "Type a question first.";
      form.querySelector("#question").focus();
      return;
    }
    const tiers = JSON.parse(form.dataset.tiers || "{}");
    const turn = document.getElementById("turn-template").content.firstElementChild.cloneNode(true);
    turn.querySelector(".question-text").textContent = question;
    conversation.appendChild(turn);
    turn.scrollIntoView({ block: "nearest" });
    const text = turn.querySelector(".answer-text");
    const button = document.getElementById("ask-button");
    button.disabled = true;
    status.textContent = "Asking…";

    const body = { question: question };
    const classification = form.querySelector("#classification").value;
    const asOf = form.querySelector("#as_of").value;
    if (classification) body.classification = classification;
    if (asOf) body.as_of = asOf;
    try {
      const response = await postJson("/web/ask", body);
      if (response.status === 401) {
        window.location.assign("/login?next=/chat");
        return;
      }
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
        setState(turn, "failure", "The question could not be asked", String(detail));
        return;
      }
      await readEvents(response, function (name, data) {
        if (name === "status") status.textContent = data.message;
        else if (name === "delta") text.textContent += data.text;
        else if (name === "answer") renderAnswer(turn, data, tiers);
        else if (name === "failure") setState(turn, "failure", "No answer", data.detail);
      });
      form.querySelector("#question").value = "";
    } catch (err) {
      setState(turn, "failure", "The connection failed", String(err));
    } finally {
      button.disabled = false;
      status.textContent = "";
    }
  }

  async function sendFeedback(button) {
    const footer = button.closest(".feedback");
    const note = footer.querySelector(".feedback-status");
    const rating = Number(button.dataset.rating);
    note.textContent = "Saving…";
    const response = await postJson("/web/feedback", { request_id: footer.dataset.requestId, rating: rating });
    if (response.ok) {
      footer.querySelectorAll(".thumb").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b === button));
      });
      note.textContent = "Thank you, your feedback was recorded.";
    } else {
      let detail = "";
      try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
      note.textContent = "Feedback was not saved: " + detail;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("ask-form");
    const conversation = document.getElementById("conversation");
    if (form && conversation) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        ask(form, conversation);
      });
      // Enter sends, Shift+Enter starts a new line: the usual chat keys.
      form.querySelector("#question").addEventListener("keydown", function (event) {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      conversation.addEventListener("click", function (event) {
        const thumb = event.target.closest(".thumb");
        if (thumb) sendFeedback(thumb);
      });
    }
  });
})();
