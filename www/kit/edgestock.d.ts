// Types for the edgestock storefront kit (edgestock.js beside this file).
// The shapes follow the worker's OpenAPI document (/openapi.json).

export type RouteName =
  | "getSku" | "reserve" | "getHold" | "release" | "createOrder" | "getOrder"
  | "cancelOrder" | "buyerOrders" | "getRoom" | "skuLive" | "roomLive" | "orderLive";

export const routes: Record<RouteName, [method: "GET" | "POST" | "PUT" | "DELETE", path: string]>;

/** An RFC 9457 problem, as every error answers. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  [extension: string]: unknown;
}

export class EdgestockError extends Error {
  status: number;
  problem: Problem;
}

export interface Sku {
  sku: string;
  on_hand: number;
  reserved: number;
  sold: number;
  available: number;
  version: number;
  low_stock: boolean;
  low_stock_threshold: number;
  per_buyer_limit: number;
  hold_seconds: number;
  deduction: "hold" | "at_order" | "at_payment";
  max_per_hold: number;
  created_at: number;
  updated_at: number;
  incoming: number;
  sellout_s: number | null;
  /** Units no channel has to itself: what the storefront sells. */
  pool: number;
  channels: Record<string, ChannelAllocation>;
}

export interface ChannelAllocation {
  dedicated: number | null;
  safety_floor: number;
  max_listed: number | null;
  percent: number | null;
  sellable: number;
}

/** A `stock` event on a live feed. */
export interface StockEvent {
  type: "stock";
  v: number;
  sku: string;
  on_hand: number;
  reserved: number;
  sold: number;
  available: number;
  low_stock: boolean;
  version: number;
  at_ms: number;
  sellout_s?: number;
  incoming?: number;
  /** What the storefront may sell when channels set units aside. */
  storefront?: number;
}

export interface Hold {
  id: string;
  sku: string;
  qty: number;
  buyer: string;
  status: "held" | "committed" | "released" | "expired" | "returned";
  expires_at: number;
  [field: string]: unknown;
}

export interface OrderLine { sku: string; qty: number; [field: string]: unknown }

export interface Order {
  id: string;
  buyer: string;
  channel: string;
  status: string;
  lines: OrderLine[];
  expires_at: number | null;
  [field: string]: unknown;
}

export interface CallOptions { token?: string; key?: string }

export function configure(options?: { base?: string; session?: string | (() => Promise<string>) | null }): void;

export function call<T = unknown>(
  name: RouteName,
  params?: Record<string, string>,
  options?: { body?: unknown; token?: string; key?: string; query?: Record<string, string> },
): Promise<T>;

export const client: {
  getSku(sku: string): Promise<Sku>;
  reserve(sku: string, qty: number, options?: CallOptions): Promise<Hold & { sku_state?: Sku }>;
  getHold(sku: string, hold: string, options?: CallOptions): Promise<Hold>;
  release(sku: string, hold: string, options?: CallOptions): Promise<Hold>;
  createOrder(order: { lines: { sku: string; qty: number }[]; channel?: string; room?: string }, options?: CallOptions): Promise<Order>;
  getOrder(order: string, options?: CallOptions): Promise<Order>;
  cancelOrder(order: string, reason?: string, options?: CallOptions): Promise<Order>;
  buyerOrders(buyer: string, options?: CallOptions): Promise<{ orders: Order[] }>;
  getRoom(room: string): Promise<unknown>;
};

export function randomKey(): string;
export function session(url?: string | null): Promise<string>;
export function badgeText(stock: Partial<StockEvent> & { available: number }): {
  text: string;
  level: "ok" | "low" | "out";
  available: number;
};

export type FeedState = "connecting" | "live" | "offline";
export function openFeed(
  path: string,
  handlers: {
    onMessage: (message: { type: string; [field: string]: unknown }) => void;
    onState?: (state: FeedState) => void;
    protocols?: () => Promise<string[]>;
  },
): { close(): void };

export class StockBadge extends HTMLElement {}
export class BuyButton extends HTMLElement {
  buy(): Promise<void>;
}

declare global {
  interface HTMLElementTagNameMap {
    "edgestock-stock-badge": StockBadge;
    "edgestock-buy-button": BuyButton;
  }
  interface HTMLElementEventMap {
    "edgestock-order": CustomEvent<Order>;
    "edgestock-error": CustomEvent<Problem>;
  }
}
