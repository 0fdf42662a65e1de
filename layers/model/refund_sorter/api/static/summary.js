// The night summary: counts per department and status, the review rate, and a confidence histogram drawn as
// inline SVG (no chart library). Everything is built with DOM calls, never from HTML strings.

const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["classified", "needs_review", "reviewed"];

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function svgElement(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function tile(value, label) {
  return element("div", { class: "tile" }, element("b", {}, String(value)), element("span", {}, label));
}

const percent = (value) => `${Math.round(value * 1000) / 10} %`;

export function departmentTable(summary, names) {
  const head = element("tr", {}, element("th", {}, "department"), ...STATUSES.map((s) => element("th", {}, s.replace("_", " "))), element("th", {}, "total"));
  const rows = summary.by_department.map((row) =>
    element(
      "tr",
      { "data-department": row.department },
      element("td", {}, names.get(row.department) || row.department),
      ...STATUSES.map((s) => element("td", {}, String(row[s]))),
      element("td", {}, String(row.total)),
    ),
  );
  return element("table", { id: "summary-departments" }, element("thead", {}, head), element("tbody", {}, ...rows));
}

// An empty chart: the <svg> and the size of its plot area inside the margins.
function chartFrame(id, label, width, height, margin) {
  const svg = svgElement("svg", { id, viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
  return { svg, plotWidth: width - margin.left - margin.right, plotHeight: height - margin.top - margin.bottom };
}

// Horizontal grid lines at the ticks, each labelled on the left.
function gridLines(svg, ticks, y, text, margin, width) {
  for (const tick of ticks) {
    svg.append(svgElement("text", { x: margin.left - 6, y: y(tick) + 4, "text-anchor": "end" }, text(tick)));
    svg.append(svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick), stroke: "#d9dee5" }));
  }
}

// Ten bars of confidence, each split into sorted automatically (bottom) and sent to a person (top).
export function histogram(bins, { width = 460, height = 220 } = {}) {
  const margin = { top: 12, right: 8, bottom: 34, left: 36 };
  const tallest = Math.max(1, ...bins.map((b) => b.classified + b.asked));
  const label = "Confidence histogram: photos per confidence band, sorted automatically or sent to a person";
  const { svg, plotWidth, plotHeight } = chartFrame("confidence-histogram", label, width, height, margin);
  const barWidth = plotWidth / bins.length;
  const y = (count) => margin.top + plotHeight - (count / tallest) * plotHeight;
  gridLines(svg, [0, Math.round(tallest / 2), tallest], y, String, margin, width);
  bins.forEach((bin, index) => {
    const x = margin.left + index * barWidth + 2;
    const total = bin.classified + bin.asked;
    const bar = svgElement("g", { class: "bar", "data-low": bin.low, "data-count": total });
    bar.append(svgElement("title", {}, `${bin.low}–${bin.high}: ${bin.classified} automatic, ${bin.asked} asked`));
    bar.append(svgElement("rect", { class: "classified", x, width: barWidth - 4, y: y(bin.classified), height: y(0) - y(bin.classified) }));
    bar.append(svgElement("rect", { class: "asked", x, width: barWidth - 4, y: y(total), height: y(bin.classified) - y(total) }));
    svg.append(bar);
    svg.append(svgElement("text", { x: x + (barWidth - 4) / 2, y: height - margin.bottom + 14, "text-anchor": "middle" }, bin.low.toFixed(1)));
  });
  svg.append(svgElement("text", { x: margin.left + plotWidth / 2, y: height - 4, "text-anchor": "middle" }, "confidence of the predicted department"));
  return svg;
}

// The last nights: the share sorted without a person as a line (0-100 %), and a table of every night's numbers.
export function trendChart(nights, { width = 460, height = 160 } = {}) {
  const margin = { top: 12, right: 8, bottom: 28, left: 36 };
  const label = "Share of each night sorted without a person, the last nights";
  const { svg, plotWidth, plotHeight } = chartFrame("trend-chart", label, width, height, margin);
  const x = (index) => margin.left + (nights.length < 2 ? plotWidth / 2 : (index / (nights.length - 1)) * plotWidth);
  const y = (share) => margin.top + plotHeight - share * plotHeight;
  gridLines(svg, [0, 0.5, 1], y, (tick) => `${tick * 100}`, margin, width);
  const known = nights.map((night, index) => [night, index]).filter(([night]) => night.auto_sorted_share !== null);
  if (known.length > 1) {
    const points = known.map(([night, index]) => `${x(index)},${y(night.auto_sorted_share)}`).join(" ");
    svg.append(svgElement("polyline", { points, fill: "none", stroke: "#1a7f37", "stroke-width": 2 }));
  }
  for (const [night, index] of known) {
    const dot = svgElement("circle", { class: "night", cx: x(index), cy: y(night.auto_sorted_share), r: 3.5, fill: "#1a7f37", "data-day": night.day });
    dot.append(svgElement("title", {}, `${night.day}: ${percent(night.auto_sorted_share)} sorted without a person`));
    svg.append(dot);
  }
  svg.append(svgElement("text", { x: margin.left + plotWidth / 2, y: height - 6, "text-anchor": "middle" }, "% sorted without a person, night by night"));
  return svg;
}

function trendTable(nights) {
  const share = (value) => (value === null || value === undefined ? "–" : percent(value));
  const head = element("tr", {}, ...["night", "photos", "sorted alone", "sent to a person", "waiting after", "model"].map((h) => element("th", {}, h)));
  const rows = nights
    .slice()
    .reverse()
    .map((night) =>
      element(
        "tr",
        { "data-day": night.day },
        element("td", {}, night.day),
        element("td", {}, String(night.photos)),
        element("td", {}, share(night.auto_sorted_share)),
        element("td", {}, share(night.review_rate)),
        element("td", {}, night.review_backlog === null ? "–" : String(night.review_backlog)),
        element("td", { class: "model-version" }, night.model_version || "–"),
      ),
    );
  return element("table", { id: "summary-trend" }, element("thead", {}, head), element("tbody", {}, ...rows));
}

function trendSection(nights) {
  if (!nights || !nights.length) return element("p", { id: "summary-trend-none" }, "No nightly run recorded yet.");
  const first = nights.find((n) => n.auto_sorted_share !== null);
  const last = [...nights].reverse().find((n) => n.auto_sorted_share !== null);
  const change = first && last && first !== last ? last.auto_sorted_share - first.auto_sorted_share : null;
  const words =
    change === null
      ? "One night so far."
      : `Sorted without a person: ${percent(first.auto_sorted_share)} on ${first.day}, ${percent(last.auto_sorted_share)} on ${last.day} (${change >= 0 ? "+" : ""}${Math.round(change * 1000) / 10} points).`;
  return element("div", { id: "summary-trend-section" }, element("p", { id: "trend-words" }, words), trendChart(nights), trendTable(nights));
}

export function renderSummary(container, summary, names) {
  const legend = element(
    "p",
    {},
    "Bars: ",
    element("span", { class: "legend-classified" }, "■ sorted automatically"),
    " · ",
    element("span", { class: "legend-asked" }, "■ sent to a person"),
  );
  const reviewers = Object.entries(summary.reviewers).map(([who, count]) => element("li", {}, `${who}: ${count}`));
  container.replaceChildren(
    element(
      "div",
      { class: "tiles" },
      tile(summary.total, "photos"),
      tile(summary.by_status.failed || 0, "failed"),
      tile(percent(summary.review_rate), "review rate"),
      tile(summary.asked, "sent to a person"),
      tile(summary.decided, "decided by people"),
      tile(summary.corrected, "corrections of the model"),
    ),
    element(
      "div",
      { class: "summary-grid" },
      element("div", {}, element("h3", {}, "Per department"), departmentTable(summary, names)),
      element(
        "div",
        {},
        element("h3", {}, "Confidence"),
        histogram(summary.confidence_histogram),
        legend,
        element("h3", {}, "Decisions per person"),
        reviewers.length ? element("ul", {}, ...reviewers) : element("p", {}, "none yet"),
      ),
    ),
    element("h3", {}, "The last nights"),
    trendSection(summary.trend),
  );
}
