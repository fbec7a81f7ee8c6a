#!/usr/bin/env node
// Draws the app icons (app/icons/*.png, committed): a teal tile with a 3x3 "convolution kernel" of
// white squares. Run again after changing the design: node scripts/make-icons.mjs
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { encodePng } from "./png-encode.mjs";

const ICONS = join(resolve(dirname(fileURLToPath(import.meta.url)), ".."), "app", "icons");
const TEAL = [15, 94, 99];
const LIGHT = [24, 160, 168];
const WEIGHTS = [0.35, 0.7, 0.35, 0.7, 1, 0.7, 0.35, 0.7, 0.35];

function draw(size, { maskable }) {
  const radius = maskable ? 0 : size * 0.22;
  const content = maskable ? 0.62 : 0.7; // maskable icons keep their content inside the 80% safe zone
  const cell = (size * content) / 3;
  const gap = cell * 0.14;
  const origin = (size - size * content) / 2;
  const coverage = (x, y) => {
    // 4x4 supersampling for smooth rounded corners
    let inside = 0;
    for (let sy = 0; sy < 4; sy++) {
      for (let sx = 0; sx < 4; sx++) {
        const px = x + (sx + 0.5) / 4;
        const py = y + (sy + 0.5) / 4;
        const dx = Math.max(radius - px, 0, px - (size - radius));
        const dy = Math.max(radius - py, 0, py - (size - radius));
        if (radius === 0 || dx * dx + dy * dy <= radius * radius) inside++;
      }
    }
    return inside / 16;
  };
  return encodePng({
    width: size,
    height: size,
    colorType: 6,
    bitDepth: 8,
    filter: 1,
    sample: (x, y) => {
      const t = (x + y) / (2 * size);
      let rgb = TEAL.map((c, i) => Math.round(c + (LIGHT[i] - c) * t * 0.6));
      const gx = Math.floor((x - origin) / cell);
      const gy = Math.floor((y - origin) / cell);
      if (gx >= 0 && gx < 3 && gy >= 0 && gy < 3) {
        const lx = x - origin - gx * cell;
        const ly = y - origin - gy * cell;
        if (lx >= gap / 2 && lx < cell - gap / 2 && ly >= gap / 2 && ly < cell - gap / 2) {
          const w = WEIGHTS[gy * 3 + gx];
          rgb = rgb.map((c) => Math.round(c + (255 - c) * w));
        }
      }
      return [...rgb, Math.round(255 * coverage(x, y))];
    },
  });
}

mkdirSync(ICONS, { recursive: true });
for (const [name, size, maskable] of [["icon-192.png", 192, false], ["icon-512.png", 512, false], ["icon-maskable-512.png", 512, true]]) {
  writeFileSync(join(ICONS, name), draw(size, { maskable }));
  console.log(`app/icons/${name}`);
}
