"""Every rendering in one place: text lines and summary tables for people, the JSON contract
for programs, ladders, SVG/PNG and plots. sniff, decode, topo and the demos render through here.

    contract   json_line, packet_json, segment_json, summary_json, option_json,
               JSON_OPTION_FIELDS
    lines      segment_line, sniff_line, the verdict marks
    tables     summary_text, nc_subflow_table
    notes      Narrator: one sentence and its RFC 8684 section per step
    ladder     build_ladder (the model, from the tracker), TextLadder / ladder_text, rows_json
    svg        ladder_svg, svg_to_png, text_boxes / overlapping (the layout check)
    plot       series, plot_series: data sequence numbers and throughput per subflow
    demo       a demo's outcome as text around the ladder, and as JSON lines
"""

from mptcplab.report.contract import (
    JSON_OPTION_FIELDS,
    json_line,
    option_json,
    packet_json,
    segment_json,
    summary_json,
)
from mptcplab.report.lines import ASCII_MARKS, UNICODE_MARKS, segment_line, sniff_line
from mptcplab.report.tables import nc_subflow_table, summary_text

__all__ = ["ASCII_MARKS", "JSON_OPTION_FIELDS", "UNICODE_MARKS", "json_line", "option_json",
           "nc_subflow_table", "packet_json", "segment_json", "segment_line", "sniff_line",
           "summary_json", "summary_text"]
