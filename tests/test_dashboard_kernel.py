"""A dashboard in a real kernel keeps updating while another cell runs a busy loop, and what
the served stages print or log shows in its log, never in a cell."""

from __future__ import annotations

import re
import textwrap

import nbformat
from nbclient import NotebookClient

CELLS = [
    """
    import logging, threading, time
    import svckit as sk
    from svckit.testing import wait_for

    logging.basicConfig()  # a root handler on the kernel's stderr, made before the runtime starts
    shop = logging.getLogger("shop")

    @sk.service
    def parse(text: str) -> dict:
        if text.endswith("7"):
            print("parse saw", text)  # on a svckit worker thread
            shop.warning("shop noticed %s", text)  # through the root handler
        if text == "boom":
            raise ValueError("boom is not a sentence")  # svckit logs it (INFO) on the svckit logger
        return {"words": text.split()}

    srv = sk.serve(parse >> sk.service(lambda words: len(words), name="n"), name="wc", http=0)
    client = sk.Client(srv.url)
    stop = threading.Event()
    sent = 0

    def load():  # keeps the flow busy until told to stop, through the busy cell
        global sent
        while not stop.is_set():
            try:
                client.wc(text="boom" if sent % 50 == 49 else f"message {sent}")
            except sk.RemoteError:
                pass
            sent += 1

    loader = threading.Thread(target=load, daemon=True)
    """,
    """
    dash = srv.dashboard(log_lines=30)
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
    stop.set()
    loader.join(30)
    wait_for(lambda: srv.metrics.replied == sent)
    wait_for(lambda: f'svckit-in">{sent}<' in dash.cards[0].stats.value)
    wait_for(lambda: "shop noticed" in dash.log.value and "boom is not" in dash.log.value)
    print("done", sent, "running" if ">running</span>" in dash.cards[0].header.value else "not running")
    """,
    """
    sk.shutdown()
    wait_for(lambda: ">stopped</span>" in dash.cards[0].header.value)
    """,
]
NOISE = ("parse saw", "shop noticed", "boom", "raised", "Traceback")


class RecordingClient(NotebookClient):
    """Keeps (cell index, comm message) for every widget update the kernel sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm_msgs: list[tuple[int, dict]] = []

    def handle_comm_msg(self, outs, msg, cell_index):
        self.comm_msgs.append((cell_index, msg))
        super().handle_comm_msg(outs, msg, cell_index)


def test_dashboard_updates_during_a_busy_cell_and_keeps_stage_output_out_of_cells(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS])
    client = RecordingClient(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    done = re.fullmatch(r"done (\d+) running\n", nb.cells[3].outputs[0]["text"])
    assert done, nb.cells[3].outputs
    sent = int(done[1])

    # the stages printed and logged all along, while later cells ran: none of it reached a cell
    assert nb.cells[2].outputs == []
    for index, cell in enumerate(nb.cells):
        text = str(cell.outputs)
        assert not any(noise in text for noise in NOISE), f"cell {index} got stray output: {text[:500]}"

    # at most 4 refreshes a second, they kept coming while the busy cell held the main thread,
    # and the counts they carried kept rising: replies kept coming under load
    busy = [m for i, m in client.comm_msgs if i == 2 and m["content"]["data"].get("method") == "update"]
    stats_updates = [str(m["content"]["data"].get("state", {}).get("value", "")) for m in busy]
    counts = [int(c) for v in stats_updates for c in re.findall(r'svckit-in">(\d+)<', v)]
    assert len(counts) >= 6, f"only {len(counts)} dashboard updates during a 3 s busy cell"
    assert len(counts) <= 4 * 3 + 3
    assert counts == sorted(counts) and len(set(counts)) >= 6, f"the counter did not keep rising: {counts}"

    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in state.values() if m.get("model_name") == "HTMLModel"]
    stats = [v for v in values if "svckit-in" in v]
    assert len(stats) == 1
    assert f'svckit-in">{sent}<' in stats[0] and f'svckit-out">{sent}<' in stats[0]
    assert any('svckit-badge" style="background:#888">stopped<' in v for v in values)
    log = [v for v in values if 'class="svckit-log"' in v]
    assert len(log) == 1
    assert "parse saw message" in log[0] and "WARNING:shop:shop noticed message" in log[0]
    assert "raised ValueError: boom is not a sentence" in log[0]
