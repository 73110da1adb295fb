// kefu console: small niceties only; every page works without this file.
document.addEventListener("DOMContentLoaded", () => {
  // ask before a form marked data-confirm is sent (drop a failed reply)
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Try it: show the fields of the chosen kind only
  const tryForm = document.getElementById("try-form");
  if (tryForm) {
    const show = () => {
      const kind = (tryForm.querySelector("input[name=kind]:checked") || {}).value || "text";
      tryForm.querySelector("#text").disabled = kind !== "text";
      tryForm.querySelector("#event").disabled = kind !== "event";
      tryForm.querySelector("#key").disabled = kind !== "event";
    };
    tryForm.addEventListener("change", show);
    show();
  }
});
