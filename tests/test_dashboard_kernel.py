"""A dashboard in a real kernel keeps updating while another cell runs a busy loop."""

from __future__ import annotations

import textwrap

import nbformat
from nbclient import NotebookClient

CELLS = [
    """
    import threading, time
    import svckit as sk
    from svckit.testing import wait_for

    @sk.service
    def parse(text: str) -> dict:
        return {"words": text.split()}

    srv = sk.serve(parse >> sk.service(lambda words: len(words), name="n"), name="wc", http=0)
    client = sk.Client(srv.url)
    TOTAL = 400

    def load():
        for i in range(TOTAL):
            client.wc(text=f"message {i}")

    loader = threading.Thread(target=load, daemon=True)
    """,
    """
    dash = srv.dashboard()
    loader.start()
    dash
    """,
    """
    start = time.time()
    x = 0
    while time.time() - start < 3:   # a busy cell: pure Python, holding the kernel's main thread
        x += 1
    """,
    """
    loader.join(30)
    wait_for(lambda: srv.metrics.replied == TOTAL)
    wait_for(lambda: f'svckit-in">{TOTAL}<' in dash.cards[0].stats.value)
    print("done", srv.metrics.replied)
    """,
    """
    sk.shutdown()
    """,
]


class RecordingClient(NotebookClient):
    """Keeps (cell index, comm message) for every widget update the kernel sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm_msgs: list[tuple[int, dict]] = []

    def handle_comm_msg(self, outs, msg, cell_index):
        self.comm_msgs.append((cell_index, msg))
        super().handle_comm_msg(outs, msg, cell_index)


def test_dashboard_updates_during_a_busy_cell_and_saves_the_right_counts(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS])
    client = RecordingClient(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    assert nb.cells[3].outputs[0]["text"] == "done 400\n"
    busy = [m for i, m in client.comm_msgs if i == 2 and m["content"]["data"].get("method") == "update"]
    # at most 4 refreshes a second, and they kept coming while the busy cell held the main thread
    stats_updates = [m for m in busy if "svckit-in" in str(m["content"]["data"].get("state", {}).get("value", ""))]
    assert len(stats_updates) >= 6, f"only {len(stats_updates)} dashboard updates during a 3 s busy cell"
    assert len(stats_updates) <= 4 * 3 + 3

    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in state.values() if m.get("model_name") == "HTMLModel"]
    stats = [v for v in values if "svckit-in" in v]
    assert len(stats) == 1
    assert 'svckit-in">400<' in stats[0] and 'svckit-out">400<' in stats[0]
    assert any('svckit-badge" style="background:#2e9e49">running<' in v for v in values)
