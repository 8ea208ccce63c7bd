"""An invoice as a PDF (fpdf2): seller and buyer, number and period, lines, VAT, totals.

Everything on it comes from the stored, immutable invoice, so the same invoice always
renders the same figures and parties; only the operator's branding (the logo, top right,
and the site's name, footer text and support URL at the foot) is the current one.
Names and addresses typed by users are only ever text in the
PDF (fpdf2 writes strings, it interprets no markup here). Text is set in DejaVu Sans
when the system has it (any script it covers); otherwise in the PDF core font Helvetica,
where a character outside Latin-1 is shown as "?".
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from fpdf import FPDF, FontFace

from appliance.models import Invoice, InvoiceLine
from appliance.services import clock, money
from appliance.services.branding import Branding

_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu",
              "/usr/share/fonts/TTF", "/usr/local/share/fonts")


def _unicode_font() -> tuple[Path, Path] | None:
    for folder in _FONT_DIRS:
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


class _Document(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(True, margin=18)
        found = _unicode_font()
        if found:
            self.add_font("Text", "", str(found[0]))
            self.add_font("Text", "B", str(found[1]))
            self.family, self.latin1 = "Text", False
        else:
            self.family, self.latin1 = "Helvetica", True

    def text_of(self, value: str) -> str:
        if self.latin1:
            return value.encode("latin-1", "replace").decode("latin-1")
        return value

    def style(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def line_of_text(self, value: str, size: float = 10, bold: bool = False,
                     height: float = 5) -> None:
        self.style(size, bold)
        self.multi_cell(0, height, self.text_of(value), new_x="LMARGIN", new_y="NEXT")


LOGO_BOX = (50.0, 18.0)  # mm: the most the logo takes, top right


def render(invoice: Invoice, lines: list[InvoiceLine],  # noqa: PLR0915 - one page, top down
           brand: Branding | None = None) -> bytes:
    """The invoice's PDF document, with the operator's branding when given."""
    pdf = _Document()
    pdf.set_title(f"Invoice {invoice.number}")
    pdf.set_author(pdf.text_of(invoice.seller_name))
    pdf.set_creation_date(invoice.issued_at)
    pdf.add_page()
    currency = invoice.currency
    if brand is not None and brand.logo is not None:
        width, height = LOGO_BOX
        pdf.image(io.BytesIO(brand.logo.data), x=pdf.w - pdf.r_margin - width, y=pdf.t_margin,
                  w=width, h=height, keep_aspect_ratio=True)
        margin = pdf.r_margin
        pdf.set_right_margin(margin + width + 4)  # the seller's lines wrap beside the logo

    pdf.line_of_text(invoice.seller_name, 16, bold=True, height=8)
    for part in invoice.seller_address.splitlines():
        pdf.line_of_text(part, 9, height=4.5)
    if brand is not None and brand.logo is not None:
        pdf.set_right_margin(margin)
        pdf.set_y(max(pdf.get_y(), pdf.t_margin + LOGO_BOX[1]))
    pdf.ln(6)
    pdf.line_of_text(f"Invoice {invoice.number}", 14, bold=True, height=7)
    last_day = invoice.period_end - dt.timedelta(days=1)
    pdf.line_of_text(f"Period: {invoice.period_start:%Y-%m-%d} to {last_day:%Y-%m-%d}", 10)
    pdf.line_of_text(f"Issued: {clock.isoformat(invoice.issued_at)[:10]}", 10)
    pdf.ln(4)

    pdf.line_of_text("Bill to", 10, bold=True)
    email = invoice.buyer_email if invoice.buyer_email != invoice.buyer_name else ""
    for part in (invoice.buyer_name, *invoice.buyer_address.splitlines(), email):
        if part.strip():
            pdf.line_of_text(part, 10)
    if invoice.buyer_vat_id:
        pdf.line_of_text(f"VAT id: {invoice.buyer_vat_id}", 10)
    pdf.ln(6)

    widths = (84, 18, 30, 42)
    pdf.style(9)
    rows = [("Description", "Hours", "Unit price", "Amount")]
    for line in lines:
        rows.append((pdf.text_of(line.description
                                 + (" (monthly cap applied)" if line.cap_applied else "")),
                     str(line.hours), money.format(line.unit_price, currency),
                     money.format(line.amount, currency)))
    if not lines:
        rows.append(("No usage in this period.", "", "", ""))
    # A table wraps a long description inside its cell instead of over its neighbours.
    headings = FontFace(emphasis="BOLD", fill_color=(235, 238, 242))
    with pdf.table(width=sum(widths), col_widths=widths, align="LEFT", line_height=5.5,
                   text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"), cell_fill_mode="NONE",
                   borders_layout="HORIZONTAL_LINES", headings_style=headings) as table:
        for row in rows:
            table.row(row)
    pdf.ln(4)

    label_width, amount_width = sum(widths[:3]), widths[3]
    rate = f"{invoice.vat_rate_bp / 100:g} %"
    totals = (("Subtotal (net)", invoice.subtotal, False),
              (f"VAT {rate} (included)", invoice.vat_amount, False),
              ("Total", invoice.total, True),
              ("Paid from prepaid credit", -invoice.credits_applied, False),
              ("Amount due", invoice.amount_due, True))
    for label, amount, bold in totals:
        pdf.style(10, bold)
        pdf.cell(label_width, 6, label, align="R")
        pdf.cell(amount_width, 6, money.format(amount, currency), align="R")
        pdf.ln()
    pdf.ln(8)
    pdf.line_of_text("Usage was charged hour by hour to the prepaid credit balance; prices "
                     "include VAT. Amounts are in " + currency + ".", 8, height=4)
    if brand is not None:
        foot = " - ".join(part for part in (brand.site_name, brand.footer_text,
                                            brand.support_url) if part)
        pdf.ln(2)
        pdf.line_of_text(foot, 8, height=4)
    return bytes(pdf.output())
