// The page's one error area (role="alert": screen readers announce it).

export function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = false;
}

export function clearError() {
  const box = document.getElementById("error");
  box.textContent = "";
  box.hidden = true;
}
