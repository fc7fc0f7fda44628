/** Throughput as inline SVG bars: completions per 10-second slot, oldest on the left. */
import { count } from "./format";

export interface ThroughputProps {
  slots: number[];
  width?: number;
  height?: number;
  /** Axis labels under the bars (the queue page's large chart). */
  labelled?: boolean;
}

const SLOT_SECONDS = 10;

export function Throughput({ slots, width = 120, height = 28, labelled = false }: ThroughputProps) {
  const max = Math.max(1, ...slots);
  const total = slots.reduce((a, b) => a + b, 0);
  const minutes = (slots.length * SLOT_SECONDS) / 60;
  const lastMinute = slots.slice(-60 / SLOT_SECONDS).reduce((a, b) => a + b, 0);
  const gap = slots.length > 40 ? 0 : 1;
  const barWidth = slots.length ? width / slots.length : width;
  const chartHeight = labelled ? height - 14 : height;
  const title = `${count(total)} completed in the last ${minutes} min; ${(lastMinute / 60).toFixed(2)}/s over the last minute`;
  return (
    <svg
      class="throughput"
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={title}
      data-total={total}
    >
      <title>{title}</title>
      <line class="axis" x1={0} x2={width} y1={chartHeight - 0.5} y2={chartHeight - 0.5} />
      <path class="bar" d={bars(slots, max, barWidth, gap, chartHeight)} />
      {labelled && total === 0 && (
        <text class="empty" x={width / 2} y={chartHeight / 2 + 4} text-anchor="middle" data-testid="chart-empty">
          No completions in the last {minutes} min
        </text>
      )}
      {labelled && (
        <>
          <text class="label" x={0} y={height - 2}>
            −{minutes} min
          </text>
          <text class="label" x={width} y={height - 2} text-anchor="end">
            now · peak {count(max === 1 && total === 0 ? 0 : max)} per {SLOT_SECONDS} s
          </text>
        </>
      )}
    </svg>
  );
}

/** All bars as one path (one element per chart, however many slots). */
function bars(slots: number[], max: number, barWidth: number, gap: number, chartHeight: number): string {
  let d = "";
  const w = Math.max(0.5, barWidth - gap);
  slots.forEach((n, i) => {
    if (n === 0) return;
    const h = Math.max(1.5, (n / max) * (chartHeight - 2));
    d += `M${(i * barWidth + gap / 2).toFixed(2)} ${(chartHeight - 1).toFixed(2)}v${(-h).toFixed(2)}h${w.toFixed(2)}v${h.toFixed(2)}z`;
  });
  return d;
}
