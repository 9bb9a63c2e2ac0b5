import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartSeries {
  label: string;
  color: string;
  /** A second y axis on the right (e.g. accuracy next to loss). */
  right?: boolean;
  unit?: string;
  /** Dashes, e.g. [6, 4] for a held-out figure next to its training one. */
  dash?: number[];
}

/**
 * A line chart (uPlot: small, canvas, no inline styles that the CSP would refuse).
 * `x` is seconds since the epoch when `time` is set, else plain numbers (rounds).
 */
export function LineChart(props: {
  title: string;
  x: number[];
  series: ChartSeries[];
  ys: (number | null)[][];
  time?: boolean;
  xLabel?: string;
  height?: number;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape =
    props.series.map((s) => `${s.label}${s.right ? 'R' : ''}`).join('|') + (props.time ? 't' : '');

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const hasRight = props.series.some((s) => s.right);
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: props.height ?? 220,
      scales: {
        x: { time: !!props.time },
        y: { auto: true, range: (_u, min, max) => [Math.min(0, min), max > min ? max : min + 1] },
        ...(hasRight ? { r: { auto: true } } : {}),
      },
      axes: [
        {
          label: props.xLabel,
          stroke: 'currentColor',
          grid: { stroke: 'rgba(128,128,128,0.15)' },
          // Rounds and epochs are whole numbers: no 1.5th round on the axis.
          ...(props.time ? {} : { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }),
        },
        {
          label: props.series.find((s) => !s.right)?.label,
          stroke: 'currentColor',
          grid: { stroke: 'rgba(128,128,128,0.15)' },
          size: 50,
        },
        ...(hasRight
          ? [
              {
                scale: 'r',
                side: 1 as const,
                label: props.series.find((s) => s.right)?.label,
                stroke: 'currentColor',
                grid: { show: false },
                size: 50,
              },
            ]
          : []),
      ],
      series: [
        { label: props.xLabel ?? (props.time ? 'Time' : 'x') },
        ...props.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          ...(s.dash ? { dash: s.dash } : {}),
          scale: s.right ? 'r' : 'y',
          spanGaps: true,
          points: { show: props.x.length < 60 },
          value: (_u: uPlot, v: number | null) =>
            v === null || v === undefined ? '—' : `${+v.toFixed(4)}${s.unit ?? ''}`,
        })),
      ],
      legend: { live: true },
    };
    const p = new uPlot(opts, [props.x, ...props.ys] as uPlot.AlignedData, el);
    plot.current = p;
    const ro = new ResizeObserver(() =>
      p.setSize({ width: Math.max(200, el.clientWidth), height: props.height ?? 220 }),
    );
    ro.observe(el);
    return () => {
      ro.disconnect();
      p.destroy();
      plot.current = null;
    };
    // Rebuilt only when the series change; new data goes through setData below.
  }, [shape]);

  useEffect(() => {
    plot.current?.setData([props.x, ...props.ys] as uPlot.AlignedData);
  }, [props.x, props.ys]);

  return (
    <figure class="chart">
      <figcaption class="sr-only">{props.title}</figcaption>
      <div ref={box} role="img" aria-label={`${props.title}: ${props.x.length} points`} />
    </figure>
  );
}
