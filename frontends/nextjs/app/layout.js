export const metadata = { title: "Lesson 12: Next.js in front of FastAPI" };

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
