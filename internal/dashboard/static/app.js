// callq dashboard: the only script. It refreshes the rows of a calls table
// (tbody[data-refresh]) every 5 seconds while the page is visible, by
// fetching them from the server; the pages work without it.

const PERIOD_MS = 5000;
let timer = null;

async function refresh() {
  const rows = document.querySelector('tbody[data-refresh]');
  if (!rows || document.visibilityState !== 'visible') return;
  // Swapping the rows would take the keyboard focus away from a link.
  if (rows.contains(document.activeElement)) return;
  let res;
  try {
    res = await fetch(rows.dataset.refresh, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'text/html' },
    });
  } catch {
    return; // offline for a moment: try again next time
  }
  if (res.status === 401) {
    stop('Your session has ended: reload the page to sign in again.');
    return;
  }
  if (!res.ok) return;
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  const fresh = doc.getElementById(rows.id);
  if (fresh && rows.isConnected && !rows.contains(document.activeElement)) {
    rows.replaceWith(document.importNode(fresh, true));
  }
}

function stop(message) {
  clearInterval(timer);
  timer = null;
  const status = document.getElementById('refresh-status');
  if (status) status.textContent = message;
}

function start() {
  if (!document.querySelector('tbody[data-refresh]')) return;
  timer = setInterval(refresh, PERIOD_MS);
  document.addEventListener('visibilitychange', () => {
    if (timer !== null && document.visibilityState === 'visible') refresh();
  });
}

start();
