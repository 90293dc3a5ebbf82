"""Every rendering in one place: text lines and summary tables for people, the JSON contract
for programs (and, as they come, ladders, SVG/PNG and plots). sniff, decode, topo and the demos
render through here.

    contract   json_line, packet_json, segment_json, summary_json, option_json,
               JSON_OPTION_FIELDS
    lines      segment_line, sniff_line, the verdict marks
    tables     summary_text
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
from mptcplab.report.tables import summary_text

__all__ = ["ASCII_MARKS", "JSON_OPTION_FIELDS", "UNICODE_MARKS", "json_line", "option_json",
           "packet_json", "segment_json", "segment_line", "sniff_line", "summary_json",
           "summary_text"]
