"""Every rendering in one place: text lines and summary tables for people, the JSON contract
for programs (and, as they come, ladders, SVG/PNG and plots). sniff, decode, topo and the demos
render through here.

    contract   json_line, option_json, packet_json, JSON_OPTION_FIELDS
    lines      segment_line, sniff_line, the verdict marks
    tables     summary_text, nc_subflow_table
"""

from mptcplab.report.contract import JSON_OPTION_FIELDS, json_line, option_json, packet_json
from mptcplab.report.lines import ASCII_MARKS, UNICODE_MARKS, segment_line, sniff_line
from mptcplab.report.tables import nc_subflow_table, summary_text

__all__ = ["ASCII_MARKS", "JSON_OPTION_FIELDS", "UNICODE_MARKS", "json_line", "option_json",
           "nc_subflow_table", "packet_json", "segment_line", "sniff_line", "summary_text"]
